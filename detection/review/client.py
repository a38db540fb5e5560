"""A small Label Studio REST client (the standard library's urllib; the SDK is not needed).

Authentication is the `Authorization: Token <key>` header. Label Studio 1.23 refuses legacy
tokens unless the server enables them (`--enable-legacy-api-token` / organisation settings);
a personal access token must be exchanged for a short-lived access token first, which
`Client` does when `token` is a JWT refresh token (three dot-separated parts).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from detection.core.errors import DetectionError


class LabelStudioError(DetectionError):
    """The server refused a request or could not be reached; the message says which."""


class Client:
    """Calls to one Label Studio server as one user."""

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        if not token:
            raise LabelStudioError("no Label Studio API token given")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._header = f"Token {token}"
        if token.count(".") == 2:  # a personal access token (JWT refresh token)
            access = self.request("POST", "/api/token/refresh", {"refresh": token}, auth=False)
            self._header = f"Bearer {access['access']}"

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """One JSON request; returns the decoded answer (None for an empty one).

        Raises:
            LabelStudioError: an HTTP error (with the server's message) or no connection.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", self._header)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                text = answer.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300].replace("\n", " ")
            raise LabelStudioError(
                f"{method} {self.url}{path}: HTTP {error.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise LabelStudioError(
                f"{method} {self.url}{path}: cannot connect ({reason})"
            ) from None
        return json.loads(text) if text else None

    def projects(self) -> list[dict[str, Any]]:
        """Every project this user sees."""
        answer = self.request("GET", "/api/projects?page_size=1000")
        return answer["results"] if isinstance(answer, dict) else answer

    def project(self, title: str, label_config: str) -> dict[str, Any]:
        """The project called `title`, created with `label_config` when there is none.

        Raises:
            LabelStudioError: a project of that title exists with another labelling config.
        """
        for project in self.projects():
            if project["title"] == title:
                if _normal(project.get("label_config", "")) != _normal(label_config):
                    raise LabelStudioError(
                        f"project {title!r} (id {project['id']}) has another labelling config; "
                        "name a new project"
                    )
                return project
        return self.request("POST", "/api/projects", {"title": title, "label_config": label_config})

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> int:
        """Import tasks (with their predictions) into a project; returns the tasks created."""
        answer = self.request("POST", f"/api/projects/{project_id}/import", tasks)
        return int(answer.get("task_count", len(tasks)))

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """A project's tasks (their ids and data), at most 10000."""
        answer = self.request("GET", f"/api/tasks?project={project_id}&page_size=10000")
        return answer["tasks"] if isinstance(answer, dict) else answer

    def export(self, project_id: int, export_type: str = "JSON") -> Any:
        """A project's export of every task (answered or not) in `export_type` (JSON, JSON_MIN)."""
        return self.request(
            "GET",
            f"/api/projects/{project_id}/export?exportType={export_type}&download_all_tasks=true",
        )


def _normal(config: str) -> str:
    return "".join(config.split())
