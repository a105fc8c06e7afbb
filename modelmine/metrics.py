"""Machine metrics for heartbeats (psutil). Cheap, non-blocking calls only."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

import psutil


class MetricsSampler:
    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless
        self._boot = psutil.boot_time()
        self._static = {
            "cpu_count": os.cpu_count() or 1,
            "hostname": socket.gethostname()[:128],
            "platform": f"{platform.system()} {platform.release()}"[:128],
            "arch": platform.machine()[:128],
        }

    def sample(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:  # not available on this platform
            load = [0.0, 0.0, 0.0]
        return {
            **self._static,
            "cpu_percent": round(psutil.cpu_percent(interval=None), 1),
            "load_avg": load,
            "memory_total": int(memory.total),
            "memory_used": int(memory.used),
            "memory_percent": round(float(memory.percent), 1),
            "uptime": int(time.time() - self._boot),
        }
