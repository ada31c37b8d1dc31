#include "data/hf_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "data/byte_level.h"
#include "tensor/check.h"
#include "unicode/normalizer2.h"
#include "unicode/regex.h"
#include "unicode/unistr.h"

namespace moefold {
namespace {

constexpr size_t kMaxCacheEntries = 1 << 20;  // pieces whose ids are remembered

std::string type_of(const nlohmann::json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>()
                                                                      : "?";
}

}  // namespace

HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::load(const std::string& path) {
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the tokenizer.json"));
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer());

  // The byte ↔ stand-in table of byte-level BPE (GPT-2's bytes_to_unicode).
  const std::array<int32_t, 256> code_points = byte_level_code_points();
  for (int b = 0; b < 256; ++b) {
    tok->byte_encoder_[b] = utf8_of(code_points[b]);
    tok->byte_decoder_[tok->byte_encoder_[b]] = static_cast<uint8_t>(b);
  }

  const nlohmann::json normalizer = j.value("normalizer", nlohmann::json());
  if (!normalizer.is_null()) {
    if (type_of(normalizer) != "NFC") {
      return bad(absl::StrCat("not supported yet: normalizer ", type_of(normalizer),
                              " (none or NFC are)"));
    }
    UErrorCode status = U_ZERO_ERROR;
    tok->nfc_ = icu::Normalizer2::getNFCInstance(status);
    MOEFOLD_CHECK(U_SUCCESS(status), "ICU NFC: " << u_errorName(status));
  }

  // Pre-tokenizer: ByteLevel with its regex, or Split(regex, Isolated) then ByteLevel.
  const nlohmann::json pre = j.value("pre_tokenizer", nlohmann::json());
  std::string pattern;
  const auto byte_level = [&](const nlohmann::json& p, bool regex_allowed) -> absl::Status {
    if (type_of(p) != "ByteLevel") {
      return bad(absl::StrCat("not supported yet: pre_tokenizer ", type_of(p),
                              " (byte-level BPE only)"));
    }
    tok->add_prefix_space_ = p.value("add_prefix_space", false);
    if (p.value("use_regex", true)) {
      if (!regex_allowed) return bad("not supported yet: two pre-tokenizer regexes");
      pattern = kByteLevelPattern;
    }
    return absl::OkStatus();
  };
  if (type_of(pre) == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array() && pre["pretokenizers"].size() == 2) {
    const nlohmann::json& split = pre["pretokenizers"][0];
    if (type_of(split) != "Split" || !split.contains("pattern") ||
        !split["pattern"].contains("Regex") || split.value("behavior", "") != "Isolated" ||
        split.value("invert", false)) {
      return bad("not supported yet: a pre_tokenizer Sequence other than Split(Regex, Isolated) "
                 "then ByteLevel");
    }
    pattern = split["pattern"]["Regex"].get<std::string>();
    if (absl::Status s = byte_level(pre["pretokenizers"][1], false); !s.ok()) return s;
  } else if (absl::Status s = byte_level(pre, true); !s.ok()) {
    return s;
  }
  if (pattern.empty()) return bad("not supported yet: a ByteLevel pre_tokenizer without a regex");
  UErrorCode status = U_ZERO_ERROR;
  UParseError parse_error;
  tok->split_.reset(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), 0,
                                               parse_error, status));
  if (U_FAILURE(status)) {
    return bad(absl::StrCat("the pre_tokenizer regex does not compile in ICU: ",
                            u_errorName(status)));
  }

  // The BPE model.
  const nlohmann::json model = j.value("model", nlohmann::json());
  if (type_of(model) != "BPE") {
    return bad(absl::StrCat("not supported yet: model ", type_of(model), " (BPE is)"));
  }
  if (model.value("byte_fallback", false) ||
      !model.value("continuing_subword_prefix", nlohmann::json()).is_null() ||
      !model.value("end_of_word_suffix", nlohmann::json()).is_null()) {
    return bad("not supported yet: BPE with byte_fallback, continuing_subword_prefix or "
               "end_of_word_suffix (byte-level BPE has none)");
  }
  tok->ignore_merges_ = model.value("ignore_merges", false);
  if (!model.contains("vocab") || !model["vocab"].is_object()) return bad("model.vocab is missing");
  int64_t size = 0;
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= std::numeric_limits<int32_t>::max()) {
      return bad(absl::StrCat("model.vocab[\"", token, "\"] is not an id"));
    }
    tok->vocab_[token] = id.get<int32_t>();
    size = std::max<int64_t>(size, id.get<int64_t>() + 1);
  }
  const nlohmann::json added = j.value("added_tokens", nlohmann::json::array());
  for (const auto& a : added) {
    if (!a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
        !a["content"].is_string() || a["content"].get<std::string>().empty()) {
      return bad("an added_tokens entry lacks an id or content");
    }
    tok->added_.emplace_back(a["content"].get<std::string>(), a["id"].get<int32_t>());
    size = std::max<int64_t>(size, a["id"].get<int64_t>() + 1);
  }
  for (const auto& [content, id] : tok->added_) {
    tok->added_first_byte_[static_cast<unsigned char>(content[0])] = true;
  }
  std::stable_sort(tok->added_.begin(), tok->added_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  tok->decoder_.assign(static_cast<size_t>(size), "");
  tok->is_added_.assign(static_cast<size_t>(size), false);
  for (const auto& [token, id] : tok->vocab_) tok->decoder_[id] = token;
  for (const auto& [content, id] : tok->added_) {
    tok->decoder_[id] = content;
    tok->is_added_[id] = true;
  }
  for (int b = 0; b < 256; ++b) {
    if (!tok->vocab_.contains(tok->byte_encoder_[b])) {
      return bad(absl::StrCat("model.vocab has no token for byte ", b,
                              ": not a byte-level BPE vocabulary"));
    }
  }
  const nlohmann::json merges = model.value("merges", nlohmann::json::array());
  for (const auto& m : merges) {
    std::string left, right;
    if (m.is_string()) {
      const std::string text = m.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos) return bad(absl::StrCat("merge '", text, "' has no space"));
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return bad(absl::StrCat("merge ", m.dump(), " is neither \"a b\" nor [\"a\", \"b\"]"));
    }
    // A merge whose result is not a token never applies (as in the tokenizers library).
    if (!tok->vocab_.contains(left + right)) continue;
    tok->merge_ranks_.emplace(absl::StrCat(left, " ", right),
                              static_cast<int32_t>(tok->merge_ranks_.size()));
  }

  for (const char* eod : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"}) {
    for (const auto& [content, id] : tok->added_) {
      if (tok->eod_id_ < 0 && content == eod) tok->eod_id_ = id;
    }
    if (tok->eod_id_ < 0 && tok->vocab_.contains(eod)) tok->eod_id_ = tok->vocab_.at(eod);
  }
  if (tok->eod_id_ < 0) {
    return bad("no end-of-document token (<|endoftext|>, <|end_of_text|>, </s> or <eos>)");
  }
  return tok;
}

void HfTokenizer::bpe(const std::string& piece, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    const auto whole = vocab_.find(piece);
    if (whole != vocab_.end()) {
      ids.push_back(whole->second);
      return;
    }
  }
  std::vector<std::string> word = utf8_characters(piece);
  while (word.size() > 1) {
    int32_t best = std::numeric_limits<int32_t>::max();
    size_t at = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merge_ranks_.find(absl::StrCat(word[i], " ", word[i + 1]));
      if (it != merge_ranks_.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == std::numeric_limits<int32_t>::max()) break;
    const std::string left = word[at], right = word[at + 1];
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == left && word[i + 1] == right) {
        merged.push_back(left + right);
        i += 2;
      } else {
        merged.push_back(std::move(word[i++]));
      }
    }
    word = std::move(merged);
  }
  for (const std::string& token : word) ids.push_back(vocab_.at(token));  // checked at load
}

void HfTokenizer::encode_plain(const std::string& text, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  const std::string prefixed = add_prefix_space_ && text[0] != ' ' ? " " + text : text;
  const icu::UnicodeString unicode = icu::UnicodeString::fromUTF8(prefixed);
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> matcher(split_->matcher(unicode, status));
  MOEFOLD_CHECK(U_SUCCESS(status), "tokenizer regex: " << u_errorName(status));
  const auto emit = [&](int32_t start, int32_t end) {  // one piece, as stand-ins, through BPE
    if (start >= end) return;
    std::string bytes, piece;
    unicode.tempSubStringBetween(start, end).toUTF8String(bytes);
    for (unsigned char b : bytes) piece += byte_encoder_[b];
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      const auto hit = cache_.find(piece);
      if (hit != cache_.end()) {
        ids.insert(ids.end(), hit->second.begin(), hit->second.end());
        return;
      }
    }
    std::vector<int32_t> piece_ids;
    bpe(piece, piece_ids);
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::move(piece), std::move(piece_ids));
  };
  int32_t done = 0;
  while (matcher->find(status) && U_SUCCESS(status)) {
    emit(done, matcher->start(status));  // Isolated: the text between matches is a piece too
    emit(matcher->start(status), matcher->end(status));
    done = matcher->end(status);
  }
  emit(done, unicode.length());
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text) const {
  std::string input(text);
  if (nfc_ != nullptr) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::UnicodeString normal =
        nfc_->normalize(icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), text.size())),
                        status);
    MOEFOLD_CHECK(U_SUCCESS(status), "NFC: " << u_errorName(status));
    input.clear();
    normal.toUTF8String(input);
  }
  std::vector<int32_t> ids;
  size_t plain = 0;  // start of the text not yet encoded
  for (size_t i = 0; i < input.size();) {
    if (!added_first_byte_[static_cast<unsigned char>(input[i])]) {
      ++i;
      continue;
    }
    const auto match = std::find_if(added_.begin(), added_.end(), [&](const auto& a) {
      return input.compare(i, a.first.size(), a.first) == 0;
    });
    if (match == added_.end()) {
      ++i;
      continue;
    }
    encode_plain(input.substr(plain, i - plain), ids);
    ids.push_back(match->second);
    i += match->first.size();
    plain = i;
  }
  encode_plain(input.substr(plain), ids);
  return ids;
}

absl::StatusOr<std::string> HfTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || decoder_[id].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("huggingface tokenizer: id ", id, " is not a token"));
    }
    if (is_added_[id]) {
      text += decoder_[id];
      continue;
    }
    for (const std::string& c : utf8_characters(decoder_[id])) {
      const auto b = byte_decoder_.find(c);
      text += b != byte_decoder_.end() ? std::string(1, static_cast<char>(b->second)) : c;
    }
  }
  return text;
}

}  // namespace moefold
