"""Personalization environments with simulated users: feed, playlist and search (see docs/guides/personalization.md).

The Gymnasium adapter lives in ``rewardloop.envs.personalization.gym_adapter`` and is not imported here, so these
environments do not need ``gymnasium``.
"""

from rewardloop.envs.personalization.catalogue import Catalogue, Item, make_catalogue
from rewardloop.envs.personalization.feed import FeedConfig, FeedEnv
from rewardloop.envs.personalization.playlist import PlaylistConfig, PlaylistEnv
from rewardloop.envs.personalization.search import SearchConfig, SearchEnv
from rewardloop.envs.personalization.users import Behaviour, User, make_user

__all__ = [
    "Behaviour",
    "Catalogue",
    "FeedConfig",
    "FeedEnv",
    "Item",
    "PlaylistConfig",
    "PlaylistEnv",
    "SearchConfig",
    "SearchEnv",
    "User",
    "make_catalogue",
    "make_user",
]
