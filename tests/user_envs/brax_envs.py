"""A user's Brax env, registered with Brax on import: ``--env tests.user_envs.brax_envs:user_pendulum``."""

from brax.envs import register_environment
from brax.envs.inverted_pendulum import InvertedPendulum


class UserPendulum(InvertedPendulum):
    """Brax's inverted pendulum under the user's own name."""


register_environment("user_pendulum", UserPendulum)
