"""The errors bad input raises and the flag names their messages use, in a module that imports
nothing of stridelab (every layer uses them)."""

from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """A bad setting: the message names the value and what is allowed."""


def flag_name(name: str) -> str:
    """A setting's command-line flag: ``num_envs`` -> ``--num-envs``."""
    return "--" + name.replace("_", "-")


def unknown_choice(what: str, value: str, choices: tuple[str, ...] | list[str]) -> ConfigError:
    """``unknown algo 'ppp' (did you mean 'ppo'?); choose one of ppo, trpo``."""
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {what} {value!r}{hint}; choose one of {', '.join(choices)}")


# Exit codes: 2 when the command must change (a bad value, a wrong path), 3 when the machine must
# (a full disk, a permission, a read-only filesystem, another process writing the run directory):
# the same command then succeeds once that is fixed.
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3


class EnvironmentFailure(RuntimeError):
    """The command was right but the machine refused it; exit code :data:`EXIT_ENVIRONMENT`."""


class RunDirBusy(EnvironmentFailure):
    """Another live process is writing the run directory."""


# errno names -> (what to tell the user, exit code). Unlisted errors count as the environment's.
_OS_CAUSES = {
    "ENOSPC": ("disk full", EXIT_ENVIRONMENT),
    "EDQUOT": ("disk quota exceeded", EXIT_ENVIRONMENT),
    "EACCES": ("permission denied", EXIT_ENVIRONMENT),
    "EPERM": ("operation not permitted", EXIT_ENVIRONMENT),
    "EROFS": ("read-only file system", EXIT_ENVIRONMENT),
    "EIO": ("input/output error", EXIT_ENVIRONMENT),
    "ENOTDIR": ("a part of the path is a file, not a directory", EXIT_USAGE),
    "EISDIR": ("is a directory, not a file", EXIT_USAGE),
    "EEXIST": ("exists and is not a directory", EXIT_USAGE),
    "ENOENT": ("no such file or directory", EXIT_USAGE),
    "ENAMETOOLONG": ("file name too long", EXIT_USAGE),
}


def describe_os_error(e: OSError) -> tuple[str, int]:
    """One line naming the path and the cause, and the exit code (``'runs/x': disk full``, 3)."""
    import errno

    name = errno.errorcode.get(e.errno or 0, "")
    cause, code = _OS_CAUSES.get(name, ((e.strerror or type(e).__name__).lower(), EXIT_ENVIRONMENT))
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    where = " -> ".join(repr(p) for p in paths) if paths else "(no path given)"
    return f"{where}: {cause}", code
