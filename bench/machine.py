"""What the benchmark scripts write beside their figures: the CPU model (and they add the load average)."""
import platform


def cpu_model() -> str:
    "The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or 'unknown'
