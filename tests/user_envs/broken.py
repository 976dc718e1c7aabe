"""A user's env module that fails to import (a dependency missing)."""

import stridelab_tests_no_such_dependency  # noqa: F401
