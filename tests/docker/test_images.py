#!/usr/bin/python3
"""What can be checked of the container images without a Docker engine (CI
has none): for Dockerfile (Debian 12 slim) and Dockerfile.cuda (Ubuntu 24.04),
- the build stage runs scripts/setup, the README's first command, which CI
  exercises (install-deps, fetch-model, the build, the demo run);
- the runtime stage installs, for every shared library the built binary
  links directly (readelf NEEDED, resolved to its Debian package with
  dpkg -S), that package (Ubuntu's 64-bit-time "t64" renames accepted), or it
  is in every base image (libc6);
- the runtime stage installs the package of the font the spectrograms use;
- a non-root USER, EXPOSE 8080, a HEALTHCHECK on /api/health, VOLUME /data,
  and an ENTRYPOINT running `drum2midi serve` on 0.0.0.0:8080 with --data /data;
- compose.yaml reserves an NVIDIA GPU for the CUDA service.
Env: D2M_BIN, D2M_SOURCE_DIR."""
import os
import re
import shlex
import subprocess
import sys

SRC = os.environ.get("D2M_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("D2M_BIN", os.path.join(SRC, "build", "drum2midi"))
sys.path.insert(0, os.path.join(SRC, "tests", "py"))
from checks import check, summary  # noqa: E402

IN_EVERY_BASE = {"libc6", "libgcc-s1", "zlib1g"}
# The sanitizer pass's binary links its runtimes; the images build a release.
SANITIZER_RUNTIMES = ("libasan", "libubsan", "liblsan", "libtsan")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def stages(path):
    """The Dockerfile's stages as lists of instructions (continuations joined)."""
    text = open(path).read()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def apt_packages(instructions):
    pkgs = set()
    for ins in instructions:
        if not ins.upper().startswith("RUN "):
            continue
        for cmd in re.split(r"&&|;", ins[4:]):
            words = [w for w in shlex.split(cmd.split("#")[0]) if not w.startswith("-")]
            if len(words) > 2 and words[0] == "apt-get" and words[1] == "install":
                pkgs.update(words[2:])
    return pkgs


def package_of(path):
    for candidate in (path, os.path.realpath(path), path.replace("/usr/lib/", "/lib/", 1),
                      os.path.realpath(path).replace("/usr/lib/", "/lib/", 1)):
        r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    return None


def needed_packages():
    r = subprocess.run(["readelf", "-d", BIN], capture_output=True, text=True, check=True)
    sonames = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    ldd = subprocess.run(["ldd", BIN], capture_output=True, text=True, check=True).stdout
    where = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    out = {}
    for so in sonames:
        if so.startswith(SANITIZER_RUNTIMES):
            continue
        out[so] = package_of(where[so]) if so in where else None
    return out


def main():
    if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        print(f"SKIP: {BIN} is not built")
        return 77
    try:
        libs = needed_packages()
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"SKIP: cannot inspect the binary ({e}); needs binutils and dpkg")
        return 77
    check(len(libs) >= 8, "the binary's direct libraries are found", str(libs))
    font_pkg = package_of(FONT)
    check(font_pkg is not None, "the spectrogram font belongs to a package", FONT)
    for name in ("Dockerfile", "Dockerfile.cuda"):
        st = stages(os.path.join(SRC, name))
        check(len(st) >= 2, f"{name}: a build stage and a runtime stage", f"{len(st)} stages")
        if len(st) < 2:
            continue
        build, runtime = st[0], st[-1]
        check(any("bash scripts/setup" in i for i in build if i.upper().startswith("RUN ")),
              f"{name}: the build stage runs scripts/setup (what CI runs)")
        pkgs = apt_packages(runtime)
        for so, pkg in sorted(libs.items()):
            ok = pkg is not None and (pkg in IN_EVERY_BASE or pkg in pkgs or pkg + "t64" in pkgs)
            check(ok, f"{name}: the runtime installs {so}", f"package {pkg}, runtime installs {sorted(pkgs)}")
        check(font_pkg in pkgs, f"{name}: the runtime installs the font ({font_pkg})")
        joined = "\n".join(runtime)
        user = re.findall(r"^USER\s+(\S+)", joined, re.M)
        check(user and user[-1] not in ("root", "0"), f"{name}: runs as a non-root user", str(user))
        check(re.search(r"^EXPOSE\s+8080\b", joined, re.M), f"{name}: EXPOSE 8080")
        check(re.search(r"^VOLUME\s+/data\b", joined, re.M), f"{name}: VOLUME /data")
        check(re.search(r"^HEALTHCHECK .*api/health", joined, re.M), f"{name}: a HEALTHCHECK on /api/health")
        entry = re.findall(r"^ENTRYPOINT\s+(\[.*\])", joined, re.M)
        check(entry and all(w in entry[-1] for w in ('"serve"', '"0.0.0.0"', '"8080"', '"/data"')),
              f"{name}: the entrypoint serves on 0.0.0.0:8080 with --data /data", str(entry))
    compose = open(os.path.join(SRC, "compose.yaml")).read()
    check(re.search(r"driver:\s*nvidia", compose) and re.search(r"capabilities:\s*\[gpu\]", compose),
          "compose.yaml reserves an NVIDIA GPU")
    return summary("test_images")


if __name__ == "__main__":
    sys.exit(main())
