#include "data/gpt2_tokenizer.h"

#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "data/byte_level.h"
#include "tensor/check.h"
#include "unicode/regex.h"
#include "unicode/unistr.h"
#include "unicode/utf8.h"

namespace moefold {
namespace {

constexpr size_t kMaxCacheEntries = 1 << 20;

absl::StatusOr<std::string> read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        path, ": cannot open the GPT-2 ", what, " (run scripts/fetch_data.sh to fetch it)"));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> Gpt2Tokenizer::load(
    const std::string& vocab_file, const std::string& merge_file) {
  std::unique_ptr<Gpt2Tokenizer> tok(new Gpt2Tokenizer());

  // The byte ↔ stand-in character table of encoder.py's bytes_to_unicode.
  tok->byte_decoder_.fill(-1);
  const std::array<int32_t, 256> code_points = byte_level_code_points();
  for (int b = 0; b < 256; ++b) {
    tok->byte_encoder_[b] = utf8_of(code_points[b]);
    tok->byte_decoder_[code_points[b]] = static_cast<int16_t>(b);
  }

  auto vocab_text = read_file(vocab_file, "vocabulary (encoder.json)");
  if (!vocab_text.ok()) return vocab_text.status();
  nlohmann::json vocab = nlohmann::json::parse(*vocab_text, nullptr, /*allow_exceptions=*/false);
  if (!vocab.is_object() || vocab.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_file, ": not a JSON object of token → id (encoder.json)"));
  }
  tok->decoder_.resize(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  for (const auto& [token, id_json] : vocab.items()) {
    if (!id_json.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocab_file, ": the id of token '", token, "' is not an integer"));
    }
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(vocab.size()) || seen[id]) {
      return absl::InvalidArgumentError(absl::StrCat(
          vocab_file, ": token '", token, "' has id ", id, ", which is out of [0, ",
          vocab.size(), ") or repeated"));
    }
    seen[id] = true;
    tok->encoder_.emplace(token, static_cast<int32_t>(id));
    tok->decoder_[id] = token;
  }
  const auto eod = tok->encoder_.find("<|endoftext|>");
  if (eod == tok->encoder_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_file, ": no \"<|endoftext|>\" token"));
  }
  tok->eod_id_ = eod->second;

  auto merges_text = read_file(merge_file, "merges (vocab.bpe)");
  if (!merges_text.ok()) return merges_text.status();
  std::istringstream merges(*merges_text);
  std::string line;
  int line_number = 0;
  while (std::getline(merges, line)) {
    ++line_number;
    if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          merge_file, ":", line_number, ": expected a merge 'left right', got '", line, "'"));
    }
    tok->merge_ranks_.emplace(line, static_cast<int32_t>(tok->merge_ranks_.size()));
  }

  UErrorCode status = U_ZERO_ERROR;
  UParseError parse_error;
  tok->pattern_.reset(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(kByteLevelPattern), 0,
                                                 parse_error, status));
  MOEFOLD_CHECK(U_SUCCESS(status), "GPT-2 regex: " << u_errorName(status));
  return tok;
}

std::vector<int32_t> Gpt2Tokenizer::bpe(const std::string& piece) const {
  std::vector<std::string> word = utf8_characters(piece);
  while (word.size() > 1) {
    // The adjacent pair with the lowest merge rank; stop when no pair is a merge.
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    std::string best_left, best_right;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merge_ranks_.find(absl::StrCat(word[i], " ", word[i + 1]));
      if (it != merge_ranks_.end() && it->second < best_rank) {
        best_rank = it->second;
        best_left = word[i];
        best_right = word[i + 1];
      }
    }
    if (best_rank == std::numeric_limits<int32_t>::max()) break;
    // Merge every occurrence of the pair, left to right.
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == best_left && word[i + 1] == best_right) {
        merged.push_back(best_left + best_right);
        i += 2;
      } else {
        merged.push_back(std::move(word[i]));
        i += 1;
      }
    }
    word = std::move(merged);
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  for (const std::string& token : word) {
    const auto it = encoder_.find(token);
    // Every single stand-in character is in GPT-2's vocabulary, and merges produce vocabulary
    // entries, so a miss means the vocabulary and merges files do not belong together.
    MOEFOLD_CHECK(it != encoder_.end(), "BPE token '" << token << "' is not in the vocabulary");
    ids.push_back(it->second);
  }
  return ids;
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text) const {
  const icu::UnicodeString unicode =
      icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), text.size()));
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> matcher(pattern_->matcher(unicode, status));
  MOEFOLD_CHECK(U_SUCCESS(status), "GPT-2 regex matcher: " << u_errorName(status));
  std::vector<int32_t> ids;
  std::string bytes, piece;
  while (matcher->find(status) && U_SUCCESS(status)) {
    const int32_t start = matcher->start(status);
    const int32_t end = matcher->end(status);
    bytes.clear();
    unicode.tempSubStringBetween(start, end).toUTF8String(bytes);
    piece.clear();
    for (unsigned char b : bytes) piece += byte_encoder_[b];
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      const auto hit = cache_.find(piece);
      if (hit != cache_.end()) {
        ids.insert(ids.end(), hit->second.begin(), hit->second.end());
        continue;
      }
    }
    std::vector<int32_t> piece_ids = bpe(piece);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(piece, std::move(piece_ids));
  }
  MOEFOLD_CHECK(U_SUCCESS(status), "GPT-2 regex: " << u_errorName(status));
  return ids;
}

absl::StatusOr<std::string> Gpt2Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpt2 tokenizer: id ", id, " outside [0, ", vocab_size(), ")"));
    }
    const std::string& token = decoder_[id];
    int32_t i = 0;
    const int32_t n = static_cast<int32_t>(token.size());
    while (i < n) {
      UChar32 c;
      U8_NEXT(reinterpret_cast<const uint8_t*>(token.data()), i, n, c);
      if (c >= 0 && c < static_cast<int32_t>(byte_decoder_.size()) && byte_decoder_[c] >= 0) {
        text.push_back(static_cast<char>(byte_decoder_[c]));
      } else {
        // Not a stand-in character: GPT-2's own vocabulary has none, so this vocabulary was
        // edited by hand; keep the character's own UTF-8.
        text += utf8_of(c < 0 ? 0xFFFD : c);
      }
    }
  }
  return text;
}

}  // namespace moefold
