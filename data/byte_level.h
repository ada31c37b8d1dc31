// The pieces that byte-level BPE tokenizers share (GPT-2's encoder.py, and the Hugging Face
// tokenizer.json ByteLevel pre-tokenizer/decoder): the pre-tokenizer regex, the byte ↔ stand-in
// character table, and UTF-8 helpers.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace moefold {

// GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other symbol runs (each with an
// optional leading space), and whitespace (trailing whitespace of a run stays with the next
// word). ICU's \s is Unicode White_Space (vertical tab and U+0085 included), as in Python's
// `regex` module that OpenAI's encoder.py uses.
inline constexpr char kByteLevelPattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// encoder.py's bytes_to_unicode: the code point standing for each byte. Printable Latin-1 bytes
// stand for themselves, the others take code points from 256 on, in byte order.
std::array<int32_t, 256> byte_level_code_points();

// One code point as UTF-8.
std::string utf8_of(int32_t code_point);

// UTF-8 text split into its characters (each as UTF-8).
std::vector<std::string> utf8_characters(const std::string& text);

}  // namespace moefold
