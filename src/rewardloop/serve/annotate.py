"""The annotation pages, server-rendered (no front-end build): ``/annotate`` shows an annotator one prompt and two
responses side by side — keys 1 (left better), 2 (right better), 3 (tie), 4 (both bad), an optional comment — and
``/annotate/admin`` shows progress, labels per annotator and Cohen's κ on overlapping items (admins only).

Which response is on the left is decided per (item, annotator) by a hash, so position bias averages out across
annotators, and the server maps left/right back to the stored pair itself (nothing the browser sends can relabel
another item). Labels go through ``store.annotation.AnnotationQueue``. Forms are plain ``application/x-www-form-
urlencoded`` posts answered by a 303 redirect (post/redirect/get); the login cookie is HttpOnly and SameSite=Strict,
so another site cannot post a label with it.
"""

from __future__ import annotations

import hashlib
import math
from html import escape
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from rewardloop.serve.auth import KEY_COOKIE, NAME_COOKIE, Auth, Caller
from rewardloop.store.annotation import AnnotationQueue
from rewardloop.store.keys import MAX_NAME

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:1rem;line-height:1.45;color:#111}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.card{border:1px solid #888;border-radius:.4rem;padding:.75rem;white-space:pre-wrap;overflow-wrap:anywhere}
pre{white-space:pre-wrap;background:#f4f4f4;padding:.75rem;border-radius:.4rem}
button{font-size:1rem;padding:.5rem .9rem;margin:.25rem .25rem .25rem 0}
button:focus,textarea:focus,input:focus{outline:3px solid #1a5fb4;outline-offset:2px}
table{border-collapse:collapse}td,th{border:1px solid #888;padding:.3rem .6rem;text-align:left}
kbd{border:1px solid #888;border-radius:.2rem;padding:0 .25rem}
"""
# keys 1–4 press the matching button, unless the annotator is typing a comment
SHORTCUTS = """
document.addEventListener('keydown', function (e) {
  if (e.target.tagName === 'TEXTAREA' || e.target.tagName === 'INPUT' || e.ctrlKey || e.metaKey || e.altKey) return;
  var b = document.querySelector('button[data-key="' + e.key + '"]');
  if (b) { e.preventDefault(); b.click(); }
});
"""
BUTTONS = (("1", "left", "Left is better"), ("2", "right", "Right is better"), ("3", "tie", "Tie"))
BUTTONS += (("4", "both_bad", "Both bad"),)


def page(title: str, body: str, script: str = "") -> HTMLResponse:
    js = f"<script>{script}</script>" if script else ""
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>'
        f"<body><main>{body}</main>{js}</body></html>"
    )
    return HTMLResponse(html)


def swapped(item_id: int, annotator: str) -> bool:
    """Whether ``annotator`` sees item ``item_id``'s ``other`` response on the left (a stable coin flip)."""
    return hashlib.sha256(f"{item_id}:{annotator}".encode()).digest()[0] % 2 == 1


def to_choice(button: str, is_swapped: bool) -> str:
    """A button (left / right / tie / both_bad) → the stored choice (response / other / tie / both_bad)."""
    if button not in ("left", "right", "tie", "both_bad"):
        raise ValueError(f"choice: {button!r} is not one of left, right, tie, both_bad")
    if button in ("tie", "both_bad"):
        return button
    return "response" if (button == "left") != is_swapped else "other"


def shown_prompt(interaction: dict) -> str:
    if interaction["messages"]:
        return "\n\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in interaction["messages"])
    return interaction["prompt"]


async def form(request: Request) -> dict[str, str]:
    """The urlencoded form fields (the last value of each)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def login_page(auth: Auth, error: str = "") -> HTMLResponse:
    field, label = ("key", "API key") if auth.enabled else ("name", "Your name")
    kind = "password" if auth.enabled else "text"
    alert = f'<p role="alert">{escape(error)}</p>' if error else ""
    return page(
        "Sign in — annotation",
        f"<h1>Annotation: sign in</h1>{alert}<form method='post' action='/annotate/login'>"
        f"<label for='{field}'>{label}</label> <input id='{field}' name='{field}' type='{kind}' required "
        f"maxlength='{MAX_NAME if field == 'name' else 200}' autofocus> <button type='submit'>Sign in</button></form>",
    )


def item_page(item: dict, caller: Caller, done: int) -> HTMLResponse:
    left, right = (
        (item["other"], item["response"]) if swapped(item["id"], caller.name) else (item["response"], item["other"])
    )
    buttons = "".join(
        f'<button type="submit" name="choice" value="{v}" data-key="{k}" aria-keyshortcuts="{k}">'
        f"{label} <kbd>{k}</kbd></button>"
        for k, v, label in BUTTONS
    )
    body = (
        f"<h1>Which response is better?</h1><p>Signed in as <strong>{escape(caller.name)}</strong>; "
        f"you have labelled {done} item(s). <a href='/annotate/logout'>Sign out</a></p>"
        f"<h2>Prompt</h2><pre>{escape(shown_prompt(item['response']))}</pre>"
        f'<div class="pair"><section aria-labelledby="left-h"><h2 id="left-h">Left</h2>'
        f'<div class="card" data-testid="left">{escape(left["completion"])}</div></section>'
        f'<section aria-labelledby="right-h"><h2 id="right-h">Right</h2>'
        f'<div class="card" data-testid="right">{escape(right["completion"])}</div></section></div>'
        f'<form method="post" action="/annotate/items/{item["id"]}"><fieldset><legend>Your judgement</legend>'
        f"{buttons}<p><label for='comment'>Comment (optional)</label><br>"
        f"<textarea id='comment' name='comment' rows='2' cols='60' maxlength='2000'></textarea></p>"
        f"</fieldset></form>"
    )
    return page("Annotate", body, SHORTCUTS)


def kappa_text(k: float) -> str:
    return "n/a" if math.isnan(k) else f"{k:.3f}"


def admin_page(progress: dict, added: str | None) -> HTMLResponse:
    per = "".join(f"<tr><td>{escape(a)}</td><td>{n}</td></tr>" for a, n in progress["per_annotator"].items())
    agree = "".join(
        f"<tr><td>{escape(r['a'])}</td><td>{escape(r['b'])}</td><td>{r['n']}</td><td>{kappa_text(r['kappa'])}</td></tr>"
        for r in progress["agreement"]
    )
    note = f'<p role="status">Queued {escape(added)} new pair(s).</p>' if added is not None else ""
    body = (
        f"<h1>Annotation progress</h1>{note}"
        f"<p data-testid='progress'>{progress['items']} items; {progress['labelled']} with a label; "
        f"{progress['complete']} with {progress['overlap']} labels.</p>"
        f"<h2>Labels per annotator</h2><table><thead><tr><th scope='col'>Annotator</th><th scope='col'>Labels</th>"
        f"</tr></thead><tbody>{per}</tbody></table>"
        f"<h2>Agreement (Cohen's κ on items both labelled)</h2><table><thead><tr><th scope='col'>Annotator</th>"
        f"<th scope='col'>Annotator</th><th scope='col'>Items</th><th scope='col'>κ</th></tr></thead>"
        f"<tbody>{agree}</tbody></table>"
        "<h2>Queue</h2><form method='post' action='/annotate/admin/enqueue'>"
        "<button type='submit'>Queue pairs from logged responses</button></form>"
    )
    return page("Annotation admin", body)


def add_annotation_routes(app: FastAPI, auth: Auth, queue: AnnotationQueue) -> None:
    def annotator(request: Request) -> Caller | None:
        """The signed-in annotator, or None (→ the login page)."""
        try:
            caller = auth.require(request, "annotator")
        except HTTPException as e:
            if e.status_code == 401:
                return None
            raise
        return caller if caller.name else None

    @app.get("/annotate", response_class=HTMLResponse, include_in_schema=False)
    async def annotate(request: Request):
        caller = annotator(request)
        if caller is None:
            return login_page(auth)
        item = await run_in_threadpool(queue.next_item, caller.name)
        done = await run_in_threadpool(queue.count_by, caller.name)
        if item is None:
            return page(
                "Annotate", f"<h1>Nothing left to label</h1><p>You have labelled {done} item(s). Thank you.</p>"
            )
        return item_page(item, caller, done)

    @app.post("/annotate/login", include_in_schema=False)
    async def login(request: Request):
        fields = await form(request)
        response = RedirectResponse("/annotate", status_code=303)
        cookie = {"httponly": True, "samesite": "strict", "path": "/"}
        if auth.enabled:
            key = fields.get("key", "")
            if auth.keys.authenticate(key) is None:
                return login_page(auth, "That key is not valid.")
            response.set_cookie(KEY_COOKIE, key, **cookie)
        else:
            name = fields.get("name", "").strip()
            if not name or len(name) > MAX_NAME or ":" in name:
                return login_page(auth, f"Enter a name of 1–{MAX_NAME} characters without ':'.")
            response.set_cookie(NAME_COOKIE, name, **cookie)
        return response

    @app.get("/annotate/logout", include_in_schema=False)
    async def logout():
        response = RedirectResponse("/annotate", status_code=303)
        response.delete_cookie(KEY_COOKIE, path="/")
        response.delete_cookie(NAME_COOKIE, path="/")
        return response

    @app.post("/annotate/items/{item_id}", include_in_schema=False)
    async def label(item_id: int, request: Request):
        caller = annotator(request)
        if caller is None:
            return RedirectResponse("/annotate", status_code=303)
        fields = await form(request)
        choice = to_choice(fields.get("choice", ""), swapped(item_id, caller.name))
        await run_in_threadpool(queue.label, item_id, caller.name, choice, fields.get("comment"))
        return RedirectResponse("/annotate", status_code=303)

    @app.get("/annotate/admin", response_class=HTMLResponse, include_in_schema=False)
    async def admin(request: Request, added: str | None = None):
        auth.require(request, "admin")
        return admin_page(await run_in_threadpool(queue.progress), added)

    @app.post("/annotate/admin/enqueue", include_in_schema=False)
    async def enqueue(request: Request):
        auth.require(request, "admin")
        added = await run_in_threadpool(lambda: queue.add_pairs(queue.pairs_from_interactions()))
        return RedirectResponse(f"/annotate/admin?added={added}", status_code=303)
