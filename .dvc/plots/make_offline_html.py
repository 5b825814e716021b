"""Build .dvc/plots/offline.html: a `dvc plots show` page template that works with no network.

DVC's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net. DVC puts those
<script> tags where the page template has the scripts placeholder (dvc_render.html.HTML); a template
without that placeholder gets none. offline.html has no such placeholder and carries the three
libraries inline instead, so the page DVC writes is one self-contained file that draws in a browser
with no network (a laptop on a plane, a CI runner, this project's sandbox).

.dvc/config points DVC at it (`dvc config plots.html_template plots/offline.html`, a path relative
to .dvc/), so a plain `dvc plots show` / `dvc plots diff` uses it.

Rebuild (needs `npm`, which fetches the three packages from the npm registry):

    python .dvc/plots/make_offline_html.py            # versions below
    python .dvc/plots/make_offline_html.py --check    # exit 1 if offline.html is not what it would build

Written for DVC 3.67 / dvc-render 1.0 (VegaRenderer emits `vegaEmbed('#id', spec)` with a
Vega-Lite 5 spec).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "offline.html"
# name, version, file inside the npm tarball
PACKAGES = [
    ("vega", "5.33.1", "package/build/vega.min.js"),
    ("vega-lite", "5.23.0", "package/build/vega-lite.min.js"),
    ("vega-embed", "6.29.0", "package/build/vega-embed.min.js"),
]
LICENSE = """\
vega, vega-lite and vega-embed: Copyright (c) 2015, University of Washington Interactive Data Lab.
All rights reserved. BSD-3-Clause:
Redistribution and use in source and binary forms, with or without modification, are permitted
provided that the following conditions are met:
1. Redistributions of source code must retain the above copyright notice, this list of conditions
   and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice, this list of
   conditions and the following disclaimer in the documentation and/or other materials provided
   with the distribution.
3. Neither the name of the copyright holder nor the names of its contributors may be used to
   endorse or promote products derived from this software without specific prior written permission.
THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR
IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR
CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER
IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF
THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
The vega bundle includes d3 modules (ISC License, Copyright Mike Bostock)."""

PAGE = """<!DOCTYPE html>
<!--
  DVC plots page template for offline use, built by .dvc/plots/make_offline_html.py for DVC 3.67.
  Inlined: {versions}.
  DVC fills in the plot and refresh placeholders below (written once each: DVC replaces every
  occurrence); there is deliberately no scripts placeholder, so DVC adds no <script> tags that
  would fetch the libraries from a CDN.
{license}
-->
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC plots</title>
{scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def fetch(workdir: Path) -> dict[str, str]:
    """The minified JS of each package, fetched with `npm pack name@version`."""
    sources = {}
    for name, version, member in PACKAGES:
        out = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=workdir, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(workdir / out) as tar:
            sources[name] = tar.extractfile(member).read().decode("utf-8")
    return sources


def render(sources: dict[str, str]) -> str:
    for name, js in sources.items():
        if "</script" in js.lower():
            raise SystemExit(f"error: {name} contains '</script', it cannot be inlined as is")
    scripts = "\n".join(f'    <script type="text/javascript">/* {name} */\n{sources[name]}\n    </script>'
                        for name, _, _ in PACKAGES)
    versions = ", ".join(f"{name} {version}" for name, version, _ in PACKAGES)
    # str.format on the skeleton only; the JS goes in afterwards so its braces are left alone
    page = PAGE.format(versions=versions, license=LICENSE, scripts="@@SCRIPTS@@")
    return page.replace("@@SCRIPTS@@", scripts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page = render(fetch(Path(tmp)))
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == page
        print("offline.html is up to date" if same else "offline.html differs: rebuild it")
        sys.exit(0 if same else 1)
    tmp_out = OUT.with_suffix(".html.tmp")
    tmp_out.write_text(page, encoding="utf-8")
    tmp_out.replace(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
