#!/usr/bin/env bash
# Builds the tests' Kubernetes control plane, or reuses it: kube-apiserver, etcd and kubectl,
# all from the k8s.io/kubernetes version go.mod pins (etcd at the version that go.mod requires,
# kubectl from the same release, so the three never skew).
#
#   tools/kube/build.sh        # prints the directory holding the binaries on its last line
#
# Binaries go to ${XDG_CACHE_HOME:-$HOME/.cache}/jointserve/kube/<k8s version>/, outside the
# work tree, so a fresh clone on the same machine reuses them. The cold build compiles most of
# Kubernetes and takes many minutes on 2 cores; a warm run only checks that the binaries run.
set -euo pipefail
cd "$(dirname "$0")"

fail() { echo "tools/kube/build.sh: FAILED: $*" >&2; exit 1; }

version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' go.mod)
[[ $version =~ ^v1\.[0-9]+\.[0-9]+$ ]] || fail "cannot read the k8s.io/kubernetes version from tools/kube/go.mod"
dest=${XDG_CACHE_HOME:-$HOME/.cache}/jointserve/kube/$version
binaries=(kube-apiserver etcd kubectl)

# What the binaries are built from: a changed go.sum or etcd wrapper must not reuse old ones.
source_hash=$(cat go.mod go.sum etcd/*.go | sha256sum | cut -d' ' -f1)

up_to_date() {
    [[ -f $dest/.source-hash && $(<"$dest/.source-hash") == "$source_hash" ]] || return 1
    "$dest/kube-apiserver" --version >/dev/null 2>&1 &&
        "$dest/etcd" --version >/dev/null 2>&1 &&
        "$dest/kubectl" version --client >/dev/null 2>&1
}

mkdir -p "$dest"
# Two builds at once (two checkouts, two make runs) would race on the same files: take turns.
exec 9>"$dest/.lock"
flock 9

if up_to_date; then
    echo "kube tools $version: reusing $dest"
    echo "$dest"
    exit 0
fi

command -v go >/dev/null || fail "no 'go' on PATH; the kube-apiserver for the tests is built from source"
echo "kube tools $version: building kube-apiserver, etcd, kubectl into $dest (cold: ~4-15 minutes on 2 cores)"
# -X stamps the release into --version (and kubectl's version-skew check), as upstream's
# hack/lib/version.sh does; without it both report v0.0.0-master.
minor=${version#v1.}; minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

work=$(mktemp -d "$dest/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS
# CGO off as in upstream's release builds: static binaries, no C toolchain needed.
# One `go build` for all three so shared packages compile once; -p stays at the default (cores).
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w$stamp" -o "$work/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd ||
    fail "go build of kube-apiserver/etcd/kubectl $version failed (see the errors above)"
elapsed=$((SECONDS - start))

for binary in "${binaries[@]}"; do
    mv -f "$work/$binary" "$dest/$binary"
done
echo "$source_hash" > "$dest/.source-hash"
up_to_date || fail "built binaries in $dest do not run (--version failed)"
echo "kube tools $version: cold build took ${elapsed}s"
"$dest/kube-apiserver" --version
"$dest/etcd" --version | head -1
echo "$dest"
