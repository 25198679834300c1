"""A stand-in for huggingface_hub.HfApi that records what a push would create and upload."""

from __future__ import annotations

from pathlib import Path


class RecordingHub:
    """Records ("create", repo_id, private) and ("upload", repo_id, sorted files) in `calls`, and the uploaded
    files' bytes in `uploaded`; reset `calls` before each use (a test's subclass keeps its own lists)."""

    calls: list = []
    uploaded: dict[str, bytes] = {}

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def create_repo(self, repo_id: str, private: bool, exist_ok: bool) -> str:
        type(self).calls.append(("create", repo_id, private))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path: str, repo_id: str, allow_patterns: list[str], commit_message: str) -> None:
        type(self).calls.append(("upload", repo_id, sorted(allow_patterns)))
        type(self).uploaded = {name: (Path(folder_path) / name).read_bytes() for name in allow_patterns}
