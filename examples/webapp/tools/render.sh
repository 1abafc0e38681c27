#!/bin/sh
# render SRC DEST VERSION: copy a site, filling @VERSION@ into every *.in page
set -eu
src=$1 dest=$2 version=$3
mkdir -p "$dest"
cd "$src"
find . -type f | while read -r f; do
    mkdir -p "$dest/$(dirname "$f")"
    case $f in
    *.in) sed "s/@VERSION@/$version/g" "$f" > "$dest/${f%.in}" ;;
    *) cp "$f" "$dest/$f" ;;
    esac
done
