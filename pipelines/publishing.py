"""The one check before any work that a push to the Hub can happen at all (online, with a token), shared by every
command that publishes: finetune.py and distill.py (a model folder) and `python -m explain --save_maps` (a maps
dataset). A push that cannot happen must not cost the user the hours of work before it."""

from __future__ import annotations

from huggingface_hub import get_token

from pipelines.errors import ConfigError, OfflineError, is_offline


def check_push_possible(repo_id: str, after: str = "after training") -> None:
    """Refuse now, in one sentence, a push to `repo_id` that would fail `after` the work: offline, or no token.

    Raises:
        OfflineError: HF_HUB_OFFLINE (or another offline switch) is set.
        ConfigError: no Hugging Face token is available.
    """
    if is_offline():
        raise OfflineError(
            f"push_to_hub is set, but {repo_id} could not be published {after}: HF_HUB_OFFLINE is set; unset it, "
            "or run without push_to_hub."
        )
    if get_token() is None:
        raise ConfigError(
            f"push_to_hub is set, but there is no Hugging Face token to publish {repo_id} with: log in "
            "(hf auth login) or set HF_TOKEN."
        )
