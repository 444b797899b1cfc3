"""A console user over plain HTTP, for the console's tests (cookies kept, Origin and CSRF sent)."""

from __future__ import annotations

import re

import httpx2

from tests.support.processes import Gateway


class Browser:
    """A console user over plain HTTP: keeps cookies like a browser and sends the console's Origin on POSTs."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.http = httpx2.Client(base_url=gw.base, follow_redirects=False, timeout=10)

    def get(self, path: str) -> httpx2.Response:
        return self.http.get(path)

    def login(self, token: str, next_path: str = "") -> httpx2.Response:
        page = self.get("/console/login")
        assert page.status_code == 200, page.text
        return self.http.post("/console/login", headers={"Origin": self.gw.base},
                              data={"csrf": form_field(page.text, "csrf"), "credential": token, "next": next_path})

    def signed_in(self, token: str) -> Browser:
        answer = self.login(token)
        assert answer.status_code == 303, answer.text
        return self

    def csrf(self) -> str:
        return form_field(self.get("/console").text, "csrf")

    def post(self, path: str, data: dict[str, str], origin: str | None = "", csrf: str | None = "",
             **headers: str) -> httpx2.Response:
        """POST a console form; by default with the right Origin and the session's CSRF token."""
        origin = self.gw.base if origin == "" else origin
        csrf = self.csrf() if csrf == "" else csrf
        sent = {**({"Origin": origin} if origin is not None else {}), **headers}
        fields = {**data, **({"csrf": csrf} if csrf is not None else {})}
        return self.http.post(path, data=fields, headers=sent)

    def close(self) -> None:
        self.http.close()


def form_field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no {name} field in the page"
    return found.group(1)
