"""``autoencoders.report.write_report``: one self-contained HTML page per run or compare.

Two kinds of check on a real two-epoch vae run and a real one-epoch compare:

- without a browser: the page exists, refers to nothing outside itself (every ``src`` a ``data:``
  URI, every ``href`` an anchor), embeds every PNG of the run byte for byte (in either layout of
  the pictures: ``RUN_DIR/*-epochNNN.png`` of older runs, ``RUN_DIR/pictures/``), and its metric
  cells' ``data-value`` attributes are ``repr`` of metrics.jsonl's (compare.json's) numbers;
- in a real headless Chromium, driven over the DevTools protocol on a pipe
  (``--remote-debugging-pipe``: fd 3 takes our commands, fd 4 gives its replies, NUL-separated
  JSON; nothing but the standard library): the page loads with no error on the console (an
  uncaught exception, ``console.error``, or one the browser logs: a refused load, a bad
  resource), every ``<img>`` decodes with a natural size above zero, and the metrics as the
  rendered page shows them (``innerText``, ``data-value``) equal the run's. The report itself
  is loaded unchanged: nothing is injected into it.

The planted faults prove the browser checks can fail: a broken base64 picture fails the decode
check, a thrown error and a ``console.error`` fail the console check (as does an external
picture, which the page's Content-Security-Policy refuses), and a metric changed by one ulp, or
only in its shown text, fails the metrics check.

Chromium (Debian's ``chromium``) is found on PATH; without it the browser tests skip, except
where the ``CI`` environment variable is set: there they fail, because CI must run them.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autoencoders.compare import compare
from autoencoders.report import ReportError, write_report
from autoencoders.training import TrainConfig, run

CHROMIUM = shutil.which("chromium")
PAGE_TIMEOUT = 20.0  # seconds for one page to load and answer


# -- the runs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real two-epoch vae run on the offline digits, with pictures every epoch, and its report."""
    directory = tmp_path_factory.mktemp("report") / "run"
    run(directory, TrainConfig(model="vae", dataset="digits", epochs=2, image_every=1), progress=False, log=lambda *_: None)
    write_report(directory)
    return directory


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory) -> Path:
    """A real one-epoch compare of mlp-ae (both backends in lockstep), and its report."""
    directory = tmp_path_factory.mktemp("report") / "compare"
    compare(TrainConfig(model="mlp-ae", dataset="digits", epochs=1), directory, progress=False, log=lambda *_: None)
    write_report(directory)
    return directory


def pictures_on_disk(directory: Path) -> list[Path]:
    """Every PNG of a run or compare directory (the top level and ``pictures/``)."""
    return sorted(directory.glob("*.png")) + sorted(directory.glob("pictures/*.png"))


def expected_run_metrics(run_dir: Path) -> dict[tuple[str, str], float]:
    """{(epoch, "train.loss"): value, (epoch, "seconds"): value, ...} from metrics.jsonl."""
    expected = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for key, value in entry.items():
            if key == "epoch":
                continue
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for part, number in items:
                expected[str(entry["epoch"]), key if part is None else f"{key}.{part}"] = number
    return expected


def expected_compare_metrics(compare_dir: Path) -> dict[tuple[str, str], float]:
    result = json.loads((compare_dir / "compare.json").read_text())
    return {(str(entry["epoch"]), key): value for entry in result["epochs"] for key, value in entry.items() if key != "epoch"}


# -- the page without a browser ---------------------------------------------------------------


class _Page(HTMLParser):
    """Every element's attributes, and the metric cells with their row's epoch."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.cells: dict[tuple[str, str], str] = {}
        self._epoch = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "tr":
            self._epoch = attributes.get("data-epoch")
        if tag == "td" and "data-value" in attributes:
            self.cells[self._epoch, attributes["data-metric"]] = attributes["data-value"]


def external_references(text: str) -> list[str]:
    """What in the page could make a browser load something: anything but data: pictures and anchors."""
    page = _Page(text)
    found = []
    for tag, attributes in page.elements:
        for name, value in attributes.items():
            value = value or ""
            if name in ("src", "srcset", "poster", "data", "action", "formaction", "background") and not value.startswith("data:image/png;base64,"):
                found.append(f"<{tag} {name}={value[:60]!r}>")
            if name in ("href", "xlink:href") and not value.startswith("#"):
                found.append(f"<{tag} {name}={value[:60]!r}>")
        if tag in ("script", "link", "iframe", "object", "embed", "base"):
            found.append(f"<{tag}>")
    found.extend(re.findall(r"https?://[^\s\"'<>]*|url\(|@import", text))
    return found


def test_the_run_report_is_one_self_contained_file(run_dir):
    report = run_dir / "report.html"
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in text
    assert external_references(text) == []
    assert "<title>vae on digits · scratch backend</title>" in text


def test_the_run_report_embeds_every_picture_on_disk(run_dir):
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    pictures = pictures_on_disk(run_dir)
    names = {path.name for path in pictures}
    assert {"loss.png", "reconstructions-epoch001.png", "reconstructions-epoch002.png", "samples-epoch002.png"} <= names
    missing = [path.name for path in pictures if base64.b64encode(path.read_bytes()).decode() not in text]
    assert missing == []


def test_the_run_reports_metrics_are_metrics_jsonl_exactly(run_dir):
    cells = _Page((run_dir / "report.html").read_text(encoding="utf-8")).cells
    expected = expected_run_metrics(run_dir)
    assert {key: repr(value) for key, value in expected.items()} == cells
    assert all(float(cells[key]) == value for key, value in expected.items())


def test_the_compare_report(compare_dir):
    text = (compare_dir / "report.html").read_text(encoding="utf-8")
    assert external_references(text) == []
    for name in ("compare.png", "compare-difference.png"):
        assert base64.b64encode((compare_dir / name).read_bytes()).decode() in text, name
    expected = expected_compare_metrics(compare_dir)
    assert set(key for _, key in expected) == {"scratch_test_loss", "torch_test_loss", "max_parameter_difference",
                                               "scratch_ms_per_step", "torch_ms_per_step", "ratio"}
    assert _Page(text).cells == {key: repr(value) for key, value in expected.items()}


def relayout(run_dir: Path, copy: Path, layout: str) -> Path:
    """A copy of the run with its per-epoch pictures in ``pictures/`` ("pictures"), at its top as
    runs wrote them before that folder ("top"), or split ("mixed": a run resumed across the change,
    epoch 1 at the top, epoch 2 in ``pictures/`` and again at the top)."""
    shutil.copytree(run_dir, copy)
    (copy / "pictures").mkdir(exist_ok=True)
    for path in list(copy.glob("*-epoch*.png")) + list(copy.glob("pictures/*-epoch*.png")):
        epoch = int(re.search(r"epoch([0-9]+)", path.name).group(1))
        folder = {"pictures": copy / "pictures", "top": copy}.get(layout, copy / "pictures" if epoch == 2 else copy)
        path.rename(folder / path.name)
        if layout == "mixed" and epoch == 2:
            shutil.copy(folder / path.name, copy / path.name)
    if layout == "top":
        (copy / "pictures").rmdir()
    return copy


@pytest.mark.parametrize("layout", ["pictures", "top", "mixed"])
def test_both_picture_layouts_are_read(run_dir, tmp_path, layout):
    """Per-epoch pictures in ``pictures/`` (runs now), at the top (older runs) or both; the curves
    and the reconstruct command's ``reconstructions.png`` at the top: every one is embedded, under
    its kind, the epochs in order; a picture in both places is shown once, from ``pictures/``."""
    copy = relayout(run_dir, tmp_path / "run", layout)
    shutil.copy(copy / "loss.png", copy / "reconstructions.png")
    epoch_pictures = sorted(copy.glob("*-epoch*.png")) + sorted(copy.glob("pictures/*-epoch*.png"))
    assert len({path.name for path in epoch_pictures}) == 8, epoch_pictures  # 4 kinds, 2 epochs
    text = write_report(copy).read_text(encoding="utf-8")
    for path in pictures_on_disk(copy):
        assert base64.b64encode(path.read_bytes()).decode() in text, path
    shown = re.findall(r'data-file="([^"]+)"', text)
    assert sorted(shown) == sorted({path.name for path in pictures_on_disk(copy)})
    assert shown.index("reconstructions-epoch001.png") < shown.index("reconstructions-epoch002.png") < shown.index("samples-epoch001.png")
    where = "pictures/" if layout in ("pictures", "mixed") else ""
    assert f"epoch 2 · {where}reconstructions-epoch002.png" in text


def test_strings_are_escaped(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["data_dir"] = "<script>alert('x')</script> & \"quoted\""
    config["model_config"] = {"<b>": "<i>"}
    (copy / "config.json").write_text(json.dumps(config))
    text = write_report(copy).read_text(encoding="utf-8")
    assert "<script" not in text and "<b>" not in text and "<i>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in text


def test_a_picture_that_is_not_a_png_is_named_not_embedded(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "samples-epoch009.png").write_bytes(b"not a picture")
    text = write_report(copy).read_text(encoding="utf-8")
    assert "samples-epoch009.png: not a PNG image; not embedded" in text
    assert base64.b64encode(b"not a picture").decode() not in text


@pytest.mark.parametrize("damage, named", [
    (lambda d: (d / "config.json").write_text("{not json"), "config.json: not valid JSON"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json: expected a JSON object"),
    (lambda d: (d / "metrics.jsonl").unlink(), "metrics.jsonl: not found"),
    (lambda d: (d / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, "tr'), "metrics.jsonl: line 2 is not valid JSON"),
    (lambda d: (d / "metrics.jsonl").write_text('{"loss": 1.0}\n'), "metrics.jsonl: line 1 is not an epoch's metrics"),
    (lambda d: (d / "metrics.jsonl").write_bytes(b"\xff\xfe"), "metrics.jsonl: not valid JSON lines (not UTF-8"),
    (lambda d: (d / "checkpoints" / "epoch-0002" / "state.json").write_text("{"), "state.json: not valid JSON"),
    (lambda d: (d / "checkpoints" / "latest").write_text("nonsense\n"), "latest: names 'nonsense'"),
    (lambda d: [path.unlink() for path in d.iterdir() if path.is_file()], "not a run or compare directory"),
])
def test_a_damaged_run_is_refused_naming_the_file(run_dir, tmp_path, damage, named):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    damage(copy)
    with pytest.raises(ValueError, match=re.escape(named)) as caught:
        write_report(copy)
    assert isinstance(caught.value, ReportError) and str(copy) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_damaged_compare_and_a_missing_directory_are_refused(compare_dir, tmp_path):
    copy = tmp_path / "compare"
    shutil.copytree(compare_dir, copy)
    (copy / "compare.json").write_text('{"epochs": 3}')
    with pytest.raises(ValueError, match=re.escape(f"{copy / 'compare.json'}: 'epochs' must be a list")):
        write_report(copy)
    (copy / "compare.json").write_text("")
    with pytest.raises(ValueError, match=re.escape(f"{copy / 'compare.json'}: not valid JSON")):
        write_report(copy)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'gone'}: no such directory")):
        write_report(tmp_path / "gone")


# -- a real browser ------------------------------------------------------------------------

# Run in the loaded page: every picture decoded (or not), its natural size, and the metric cells
# as rendered. img.decode() rejects a picture that cannot be decoded; naturalWidth is 0 then too.
_INSPECT = """(async () => {
  const images = [...document.images];
  const decoded = await Promise.all(images.map(img => img.decode().then(() => true, () => false)));
  return JSON.stringify({
    images: images.map((img, i) => ({file: img.dataset.file || img.getAttribute("src").slice(0, 80),
                                     width: img.naturalWidth, height: img.naturalHeight, decoded: decoded[i]})),
    cells: [...document.querySelectorAll("#metrics-table td[data-metric]")].map(td => ({
      epoch: td.closest("tr").dataset.epoch, metric: td.dataset.metric,
      value: td.dataset.value === undefined ? null : td.dataset.value, text: td.innerText.trim()})),
  });
})()"""


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

    The browser reads commands from its fd 3 and writes replies and events to its fd 4, each a
    JSON object ended by a NUL byte. A shell moves the two pipes that ``subprocess`` gives it as
    stdin and stdout to fds 3 and 4 (no ``preexec_fn``, which is unsafe in a process with threads)."""

    def __init__(self, executable: str, profile: Path, log: Path):
        arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--remote-debugging-pipe",
                     f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                     "--disable-extensions", "--disable-background-networking", "--disable-sync",
                     "--disable-component-update", "--mute-audio", "about:blank"]
        self.log = log
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >&2', executable, *arguments],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        self._buffer, self._next_id = b"", 0
        self.events: list[dict] = []

    def _receive(self, deadline: float) -> dict:
        fd = self.process.stdout.fileno()
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"chromium did not answer in time; its log: {self.stderr()[-2000:]}")
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the DevTools pipe (exit {self.process.poll()}); "
                                       f"its log: {self.stderr()[-2000:]}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = PAGE_TIMEOUT) -> dict:
        self._next_id += 1
        command = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        self.process.stdin.write(json.dumps(command).encode() + b"\0")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, session: str, timeout: float = PAGE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method and event.get("sessionId") == session for event in self.events):
            self.events.append(self._receive(deadline))

    def load(self, path: Path) -> dict:
        """Open ``path`` in a new tab; {"errors": [...], "images": [...], "cells": [...]} once loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Runtime", "Log", "Page"):
                self.send(f"{domain}.enable", session=session)
            self.send("Page.navigate", {"url": path.resolve().as_uri()}, session)
            self.wait_for("Page.loadEventFired", session)
            reply = self.send("Runtime.evaluate", {"expression": _INSPECT, "awaitPromise": True, "returnByValue": True}, session)
            if "exceptionDetails" in reply:
                raise RuntimeError(f"the inspection script failed: {reply['exceptionDetails']}")
            page = json.loads(reply["result"]["value"])
        finally:
            self.send("Target.closeTarget", {"targetId": target})
        page["errors"] = console_errors([event for event in self.events if event.get("sessionId") == session])
        self.events = [event for event in self.events if event.get("sessionId") != session]
        return page

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError, ValueError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def console_errors(events: list[dict]) -> list[str]:
    """Errors a page produced: uncaught exceptions, console.error/console.assert, and what the
    browser itself logs as an error (a refused or failed load, a bad resource)."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("uncaught: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(f"console.{params['type']}: " + " ".join(str(arg.get("value", arg.get("description", "")))
                                                                   for arg in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(f"browser ({params['entry'].get('source')}): {params['entry'].get('text')}")
    return errors


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if CHROMIUM is None:
        reason = "chromium is not installed (Debian: apt-get install chromium); the report's browser tests need it"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and CI must run them", pytrace=False)
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("chromium")
    browser = Chromium(CHROMIUM, directory / "profile", directory / "stderr.log")
    try:
        browser.send("Browser.getVersion")
        yield browser
    finally:
        browser.close()


def image_problems(page: dict) -> list[str]:
    return [f"{image['file']}: {image['width']}x{image['height']}, decoded {image['decoded']}"
            for image in page["images"] if not (image["decoded"] and image["width"] > 0 and image["height"] > 0)]


def metric_problems(page: dict, expected: dict[tuple[str, str], float]) -> list[str]:
    """Where the rendered metric cells differ from ``expected``: each value exact in ``data-value``
    (``repr``) and shown to six significant digits; none missing, none extra."""
    shown = {(cell["epoch"], cell["metric"]): cell for cell in page["cells"] if cell["value"] is not None}
    problems = [f"{key}: not shown" for key in expected if key not in shown]
    problems += [f"{key}: shown but not in the run's file" for key in shown if key not in expected]
    for key, value in expected.items():
        cell = shown.get(key)
        if cell is None:
            continue
        if cell["value"] != repr(value) or float(cell["value"]) != value:
            problems.append(f"{key}: data-value {cell['value']} != {value!r}")
        if float(cell["text"]) != float(format(value, ".6g")):
            problems.append(f"{key}: shows {cell['text']!r}, not {value:.6g}")
    return problems


def test_the_run_report_in_a_browser(chromium, run_dir):
    page = chromium.load(run_dir / "report.html")
    assert page["errors"] == []
    assert image_problems(page) == []
    assert sorted(image["file"] for image in page["images"]) == sorted(path.name for path in pictures_on_disk(run_dir))
    assert metric_problems(page, expected_run_metrics(run_dir)) == []


def test_the_compare_report_in_a_browser(chromium, compare_dir):
    page = chromium.load(compare_dir / "report.html")
    assert page["errors"] == []
    assert image_problems(page) == []
    assert sorted(image["file"] for image in page["images"]) == ["compare-difference.png", "compare.png"]
    assert metric_problems(page, expected_compare_metrics(compare_dir)) == []


# -- planted faults: each browser check fails when it should ------------------------------


def planted(run_dir: Path, tmp_path: Path, change) -> Path:
    """A copy of the run's report with ``change(text) -> text`` applied."""
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    changed = change(text)
    assert changed != text, "the fault was not planted"
    copy = tmp_path / "planted.html"
    copy.write_text(changed, encoding="utf-8")
    return copy


def _without_policy(text: str) -> str:
    """The page without its Content-Security-Policy, so that a planted script runs (the policy refuses any)."""
    return re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text, count=1)


def _before_body_end(snippet: str):
    return lambda text: text.replace("</body>", snippet + "</body>", 1)


def test_planted_broken_picture_fails_the_decode_check(chromium, run_dir, tmp_path):
    garbage = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"not the rest of a PNG" * 20).decode()
    page = chromium.load(planted(run_dir, tmp_path, lambda text: re.sub(
        r'src="data:image/png;base64,[^"]+"', f'src="data:image/png;base64,{garbage}"', text, count=1)))
    assert len(image_problems(page)) == 1
    assert metric_problems(page, expected_run_metrics(run_dir)) == []


@pytest.mark.parametrize("script", [
    'throw new Error("planted failure")',
    'console.error("planted failure")',
])
def test_planted_script_error_fails_the_console_check(chromium, run_dir, tmp_path, script):
    page = chromium.load(planted(run_dir, tmp_path, lambda text: _before_body_end(f"<script>{script}</script>")(_without_policy(text))))
    assert len(page["errors"]) == 1 and "planted failure" in page["errors"][0]
    assert image_problems(page) == []


def test_planted_script_and_external_picture_are_refused_and_reported(chromium, run_dir, tmp_path):
    """With the page's policy in place a script never runs and an external picture never loads:
    the browser logs each refusal as an error, so a report that stopped being self-contained fails."""
    page = chromium.load(planted(run_dir, tmp_path, _before_body_end(
        '<script>document.title = "ran"</script><img src="https://example.invalid/x.png" data-file="external">')))
    assert len(page["errors"]) >= 2, page["errors"]
    assert any("script" in error for error in page["errors"]) and any("example.invalid" in error for error in page["errors"])
    assert image_problems(page) and all("external" in problem for problem in image_problems(page))


@pytest.mark.parametrize("where", ["data-value", "text"])
def test_planted_changed_metric_fails_the_metrics_check(chromium, run_dir, tmp_path, where):
    expected = expected_run_metrics(run_dir)
    value = expected["2", "test.loss"]
    cell = re.compile(r'(<td class="number[^"]*" data-metric="test\.loss" data-value=")([^"]+)(" title="[^"]+">)([^<]+)(</td>)')

    def change(text):
        # the second epoch's test loss: its exact value one ulp up, or only the number shown
        matches = list(cell.finditer(text))
        match = matches[1]
        assert match.group(2) == repr(value)
        groups = list(match.groups())
        if where == "data-value":
            groups[1] = repr(math.nextafter(value, math.inf))
        else:
            groups[3] = format(value * 1.001, ".6g")
        return text[:match.start()] + "".join(groups) + text[match.end():]

    page = chromium.load(planted(run_dir, tmp_path, change))
    assert page["errors"] == [] and image_problems(page) == []
    problems = metric_problems(page, expected)
    assert len(problems) == 1 and problems[0].startswith("('2', 'test.loss')")
