#!/usr/bin/env bash
# Make a local Python 3.11 base image from Debian's packages, for machines that cannot pull
# python:3.11-slim-bookworm from a registry. Debian bookworm's python3 is 3.11, like the official image.
#
#   deploy/docker/base-image.sh [NAME]        # default NAME: loopml-base:bookworm
#   make image BASE_IMAGE=loopml-base:bookworm
#
# Needs root, debootstrap and a running Docker engine. Reuses NAME if it exists (FORCE=1 rebuilds).
# Settings (environment):
#   SUITE          Debian suite (bookworm)
#   DEBIAN_MIRROR  mirror for debootstrap (default: the first URI of this host's apt sources,
#                  else http://deb.debian.org/debian)
#   CA_BUNDLE      CA bundle copied into the image (default: $PIP_CERT, pip's configured `cert`,
#                  $SSL_CERT_FILE, then /etc/ssl/certs/ca-certificates.crt). Where the package index
#                  is reached through a TLS-intercepting proxy this bundle must hold its CA, or pip
#                  in the image build fails with CERTIFICATE_VERIFY_FAILED.
set -euo pipefail

NAME="${1:-loopml-base:bookworm}"
SUITE="${SUITE:-bookworm}"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "base image $NAME exists (FORCE=1 to rebuild)"
    exit 0
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | head -n1 | sed 's/^URIs: *//' || true)"
fi
if [ -z "$mirror" ]; then
    mirror="$(grep -hoE '^deb +(\[[^]]*\] +)?[^ ]+' /etc/apt/sources.list 2>/dev/null \
        | head -n1 | awk '{print $NF}' || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

ca="${CA_BUNDLE:-${PIP_CERT:-}}"
if [ -z "$ca" ] && command -v pip3 >/dev/null; then
    ca="$(pip3 config get global.cert 2>/dev/null || true)"
fi
ca="${ca:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
if [ ! -s "$ca" ]; then
    echo "no CA bundle at '$ca' (set CA_BUNDLE)" >&2
    exit 2
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/loopml-base.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
echo "debootstrap $SUITE from $mirror into $dir"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip \
    "$SUITE" "$dir" "$mirror" >"$dir.log" 2>&1 || { tail -n 30 "$dir.log" >&2; exit 1; }
rm -f "$dir.log"

# The host's CA bundle (with the proxy's CA, if any) becomes the image's system bundle.
install -D -m 0644 "$ca" "$dir/etc/ssl/certs/ca-certificates.crt"
# Smaller: no apt lists, caches, docs or man pages.
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*

cert=/etc/ssl/certs/ca-certificates.crt
tar --numeric-owner -C "$dir" -c . | docker import \
    -c "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    -c "ENV LANG=C.UTF-8" \
    -c "ENV PIP_CERT=$cert" \
    -c "ENV SSL_CERT_FILE=$cert" \
    -c "ENV REQUESTS_CA_BUNDLE=$cert" \
    -c 'CMD ["python3"]' \
    -m "loopml base: Debian $SUITE minbase + python3 (debootstrap)" \
    - "$NAME" >/dev/null
echo "base image $NAME: $(docker run --rm --network host "$NAME" python3 --version)"
