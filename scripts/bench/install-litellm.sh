#!/usr/bin/env bash
# Installs the LiteLLM proxy into a venv for scripts/bench.sh.
#
# LiteLLM 1.109.1 pins `certifi>=2026.10.19` and `litellm-proxy-extras==0.4.113`
# (and `litellm-enterprise==0.1.82`), which the package mirror may lack. So:
# download the wheel, read its dependency list (base + `proxy` extra), relax
# those exact pins, install the list, then install litellm itself with --no-deps.
#
# Usage: install-litellm.sh VENV_DIR [VERSION]
set -euo pipefail
venv=${1:?usage: install-litellm.sh VENV_DIR [VERSION]}
version=${2:-1.109.1}
py=${PYTHON:-python3}

if [ -x "$venv/bin/litellm" ] && "$venv/bin/python" -c 'import litellm.proxy.proxy_server' 2>/dev/null; then
  echo "litellm already installed in $venv"
  exit 0
fi
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip packaging >/dev/null
wheel_dir=$(mktemp -d)
trap 'rm -rf "$wheel_dir"' EXIT
"${pip[@]}" download --no-deps -d "$wheel_dir" "litellm==$version"
wheel=$(ls "$wheel_dir"/litellm-*.whl)
reqs="$wheel_dir/requirements.txt"
"$venv/bin/python" - "$wheel" "$reqs" <<'PY'
import sys, zipfile, re
from packaging.requirements import Requirement
from packaging.markers import default_environment
wheel, out = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(wheel)
meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
text = z.read(meta).decode()
# Exact pins the mirror may not have: keep the name, drop the version.
relax = {"certifi", "litellm-proxy-extras", "litellm-enterprise"}
lines = []
for line in text.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    env = default_environment()
    ok = False
    for extra in ("", "proxy"):
        env["extra"] = extra
        if req.marker is None or req.marker.evaluate(env):
            ok = True
    if not ok:
        continue
    name = req.name
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    spec = "" if name.lower() in relax else str(req.specifier)
    lines.append(f"{name}{extras}{spec}")
open(out, "w").write("\n".join(sorted(set(lines))) + "\n")
print(f"{len(lines)} requirements (pins relaxed: {', '.join(sorted(relax))})")
PY
"${pip[@]}" install -r "$reqs"
"${pip[@]}" install --no-deps "$wheel"
"$venv/bin/python" -c 'import litellm.proxy.proxy_server' && echo "litellm $version installed in $venv"
