"""Send a recording as a live stream: H.264 (x264 ``tune=zerolatency``, preset ultrafast) in MPEG-TS over UDP to
127.0.0.1, paced on the recording's own timestamps, as a camera encoder would send it. For demos, the tests and the
live benchmark (``benchmarks/live_stream.py``); FFmpeg's own command line does the same::

    ffmpeg -re -i clip.mp4 -c:v libx264 -tune zerolatency -f mpegts "udp://127.0.0.1:5000?pkt_size=1316"
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import av

__all__ = ["UdpSender", "free_udp_port", "wait_until_listening"]


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port: int, timeout_s: float = 120.0) -> bool:
    """Wait until some process has a UDP socket bound to ``port`` (a receiver that opened the stream: packets sent
    before that are lost, as UDP is). Returns False after ``timeout_s`` seconds."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if any(c.laddr and c.laddr.port == port for c in psutil.net_connections(kind="udp")):
                return True
        except psutil.Error:
            pass
        time.sleep(0.1)
    return False


class UdpSender(threading.Thread):
    """Stream ``clip`` (its first ``seconds``, looped while ``loop``) to ``udp://127.0.0.1:port`` at real pace.

    Args:
        clip: a video file.
        port: destination port on 127.0.0.1.
        seconds: stream time to send (None: the whole clip once, or forever when ``loop``).
        delay_s: wait this long before the first packet, after the receiver listens (``wait``).
        wait: wait (up to 120 s) until a receiver has bound ``port`` before sending.
        loop: start the clip again at its end (timestamps keep increasing).

    ``stop()`` ends it early (at the next frame); ``sent`` counts the frames sent.
    """

    def __init__(self, clip: Path, port: int, seconds: float | None = None, delay_s: float = 0.5,
                 loop: bool = False, wait: bool = True) -> None:
        super().__init__(daemon=True, name="udp-sender")
        self.clip, self.port, self.seconds, self.delay_s, self.loop = Path(clip), port, seconds, delay_s, loop
        self.wait = wait
        self._stop_event = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            self._send()
        except BaseException as e:  # noqa: BLE001 - reported to the test through .error
            self.error = e

    def _send(self) -> None:
        if self.wait and not wait_until_listening(self.port):
            raise TimeoutError(f"nothing listens on udp port {self.port}")
        if self._stop_event.wait(self.delay_s):
            return
        out = av.open(f"udp://127.0.0.1:{self.port}?pkt_size=1316", "w", format="mpegts")
        try:
            enc = None
            t0 = time.monotonic()
            base = 0.0
            n = 0
            while True:
                with av.open(str(self.clip)) as inp:
                    stream = inp.streams.video[0]
                    if enc is None:
                        enc = out.add_stream("libx264", rate=round(float(stream.average_rate or 25)))
                        enc.width, enc.height = stream.codec_context.width, stream.codec_context.height
                        enc.pix_fmt = "yuv420p"
                        enc.options = {"tune": "zerolatency", "preset": "ultrafast", "g": "25"}
                    last = 0.0
                    for f in inp.decode(stream):
                        t = base + float(f.pts * f.time_base)
                        last = t
                        if self.seconds is not None and t >= self.seconds or self._stop_event.is_set():
                            return
                        wait = t0 + t - time.monotonic()
                        if wait > 0 and self._stop_event.wait(wait):
                            return
                        frame = av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")
                        frame.pts = n
                        for p in enc.encode(frame):
                            out.mux(p)
                        n += 1
                        self.sent = n
                    base = last + 1.0 / float(stream.average_rate or 25)
                if not self.loop:
                    return
        finally:
            if enc is not None:
                for p in enc.encode():
                    out.mux(p)
            out.close()
