#include "data/hf_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "data/byte_level.h"
#include "tensor/check.h"
#include "unicode/normalizer2.h"
#include "unicode/regex.h"
#include "unicode/unistr.h"

namespace moefold {
namespace {

constexpr size_t kMaxCacheEntries = 1 << 20;  // words whose ids are remembered
constexpr size_t kMaxCachedWord = 256;        // bytes; longer words (whole texts) are not kept

std::string type_of(const nlohmann::json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>()
                                                                      : "?";
}

absl::Status unsupported(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("not supported yet: ", what));
}

}  // namespace

HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::load(const std::string& path) {
  const auto bad = [&](const absl::Status& s) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the tokenizer.json"));
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return bad(absl::InvalidArgumentError("not a JSON object"));
  }
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer());
  try {
    if (absl::Status s = tok->load_normalizer(j.value("normalizer", nlohmann::json())); !s.ok()) {
      return bad(s);
    }
    if (absl::Status s = tok->load_pre_tokenizer(j.value("pre_tokenizer", nlohmann::json()));
        !s.ok()) {
      return bad(s);
    }
    if (absl::Status s = tok->load_model(j); !s.ok()) return bad(s);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong JSON type
    return bad(absl::InvalidArgumentError(absl::StrCat("malformed: ", e.what())));
  }
  for (const char* eod : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>",
                          "<\uFF5Cend\u2581of\u2581sentence\uFF5C>"}) {
    for (const auto& [content, id] : tok->added_) {
      if (tok->eod_id_ < 0 && content == eod) tok->eod_id_ = id;
    }
    if (tok->eod_id_ < 0 && tok->vocab_.contains(eod)) tok->eod_id_ = tok->vocab_.at(eod);
  }
  if (tok->eod_id_ < 0) {
    return bad(absl::InvalidArgumentError(
        "no end-of-document token (<|endoftext|>, <|end_of_text|>, </s>, <eos> or "
        "<\uFF5Cend\u2581of\u2581sentence\uFF5C>)"));
  }
  return tok;
}

absl::Status HfTokenizer::load_normalizer(const nlohmann::json& normalizer) {
  if (normalizer.is_null()) return absl::OkStatus();
  const bool sequence = type_of(normalizer) == "Sequence";
  if (sequence && !normalizer.value("normalizers", nlohmann::json()).is_array()) {
    return absl::InvalidArgumentError("normalizer Sequence without a normalizers list");
  }
  const nlohmann::json steps = sequence ? normalizer["normalizers"] : nlohmann::json{normalizer};
  for (const nlohmann::json& n : steps) {
    const std::string type = type_of(n);
    if (type == "NFC") {
      UErrorCode status = U_ZERO_ERROR;
      nfc_ = icu::Normalizer2::getNFCInstance(status);
      MOEFOLD_CHECK(U_SUCCESS(status), "ICU NFC: " << u_errorName(status));
      normalizer_.push_back({NormalizerStep::kNfc, "", ""});
    } else if (type == "Prepend" && n.value("prepend", nlohmann::json()).is_string()) {
      normalizer_.push_back({NormalizerStep::kPrepend, "", n["prepend"].get<std::string>()});
    } else if (type == "Replace" && n.contains("pattern") && n["pattern"].is_object() &&
               n["pattern"].value("String", nlohmann::json()).is_string() &&
               n.value("content", nlohmann::json()).is_string() &&
               !n["pattern"]["String"].get<std::string>().empty()) {
      const std::string from = n["pattern"]["String"].get<std::string>();
      const std::string to = n["content"].get<std::string>();
      normalizer_.push_back({NormalizerStep::kReplace, from, to});
      if (from == " ") space_ = to;
    } else {
      return unsupported(absl::StrCat("normalizer ", type,
                                      " (NFC, Prepend, Replace of a String, and a Sequence of "
                                      "them are)"));
    }
  }
  for (const NormalizerStep& step : normalizer_) {
    if (step.kind == NormalizerStep::kPrepend && !space_.empty() && step.text == space_) {
      strip_leading_space_ = true;
    }
  }
  return absl::OkStatus();
}

// Byte-level: ByteLevel with its regex, or Split(regex, Isolated) then ByteLevel.
// SentencePiece-style: none (the normalizer turned spaces into "▁"), or Metaspace.
absl::Status HfTokenizer::load_pre_tokenizer(const nlohmann::json& pre) {
  if (pre.is_null()) {
    byte_level_ = false;
    return absl::OkStatus();
  }
  if (type_of(pre) == "Metaspace") {
    byte_level_ = false;
    metaspace_ = true;
    space_ = pre.value("replacement", "\u2581");
    const std::string scheme =
        pre.value("prepend_scheme", pre.value("add_prefix_space", true) ? "always" : "never");
    if (scheme != "always" && scheme != "first" && scheme != "never") {
      return absl::InvalidArgumentError(absl::StrCat("Metaspace prepend_scheme '", scheme, "'"));
    }
    metaspace_prepend_ = scheme == "always" ? Prepend::kAlways
                         : scheme == "first" ? Prepend::kFirst
                                             : Prepend::kNever;
    metaspace_split_ = pre.value("split", true);
    strip_leading_space_ = metaspace_prepend_ != Prepend::kNever;
    return absl::OkStatus();
  }
  // Byte-level: Split(regex, Isolated) steps, each splitting the pieces of the one before (one
  // for Llama 3 and Qwen, three for DeepSeek-V3), then ByteLevel, whose use_regex is one more.
  std::vector<std::string> patterns;
  const nlohmann::json steps = type_of(pre) == "Sequence" && pre.contains("pretokenizers") &&
                                       pre["pretokenizers"].is_array()
                                   ? pre["pretokenizers"]
                                   : nlohmann::json::array({pre});
  for (size_t i = 0; i < steps.size(); ++i) {
    const nlohmann::json& step = steps[i];
    if (i + 1 < steps.size()) {
      if (type_of(step) != "Split" || !step.contains("pattern") ||
          !step["pattern"].contains("Regex") || step.value("behavior", "") != "Isolated" ||
          step.value("invert", false)) {
        return unsupported("a pre_tokenizer Sequence other than Split(Regex, Isolated) steps "
                           "then ByteLevel");
      }
      patterns.push_back(step["pattern"]["Regex"].get<std::string>());
      continue;
    }
    if (type_of(step) != "ByteLevel") {
      return unsupported(absl::StrCat("pre_tokenizer ", type_of(step),
                                      " (ByteLevel, Split then ByteLevel, Metaspace or none are)"));
    }
    add_prefix_space_ = step.value("add_prefix_space", false);
    if (step.value("use_regex", true)) patterns.push_back(kByteLevelPattern);
  }
  if (patterns.empty()) return unsupported("a ByteLevel pre_tokenizer without a regex");
  for (const std::string& pattern : patterns) {
    UErrorCode status = U_ZERO_ERROR;
    UParseError parse_error;
    splits_.emplace_back(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), 0,
                                                    parse_error, status));
    if (U_FAILURE(status)) {
      return absl::InvalidArgumentError(absl::StrCat("the pre_tokenizer regex '", pattern,
                                                     "' does not compile in ICU: ",
                                                     u_errorName(status)));
    }
  }
  // The byte ↔ stand-in table of byte-level BPE (GPT-2's bytes_to_unicode).
  const std::array<int32_t, 256> code_points = byte_level_code_points();
  for (int b = 0; b < 256; ++b) {
    byte_encoder_[b] = utf8_of(code_points[b]);
    byte_decoder_[byte_encoder_[b]] = static_cast<uint8_t>(b);
  }
  return absl::OkStatus();
}

absl::Status HfTokenizer::load_model(const nlohmann::json& j) {
  const nlohmann::json model = j.value("model", nlohmann::json());
  if (type_of(model) != "BPE") {
    return unsupported(absl::StrCat("model ", type_of(model), " (BPE is)"));
  }
  if (!model.value("continuing_subword_prefix", nlohmann::json()).is_null() ||
      !model.value("end_of_word_suffix", nlohmann::json()).is_null()) {
    return unsupported("BPE with continuing_subword_prefix or end_of_word_suffix");
  }
  const bool byte_fallback = model.value("byte_fallback", false);
  if (byte_level_ && byte_fallback) return unsupported("byte-level BPE with byte_fallback");
  if (!byte_level_ && !byte_fallback) {
    return unsupported("BPE without byte_fallback outside byte-level BPE (unknown characters as "
                       "unk_token)");
  }
  ignore_merges_ = model.value("ignore_merges", false);
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("model.vocab is missing");
  }
  int64_t size = 0;
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat("model.vocab[\"", token, "\"] is not an id"));
    }
    vocab_[token] = id.get<int32_t>();
    size = std::max<int64_t>(size, id.get<int64_t>() + 1);
  }
  for (const auto& a : j.value("added_tokens", nlohmann::json::array())) {
    if (!a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
        !a["content"].is_string() || a["content"].get<std::string>().empty()) {
      return absl::InvalidArgumentError("an added_tokens entry lacks an id or content");
    }
    added_.emplace_back(a["content"].get<std::string>(), a["id"].get<int32_t>());
    size = std::max<int64_t>(size, a["id"].get<int64_t>() + 1);
  }
  for (const auto& [content, id] : added_) {
    added_first_byte_[static_cast<unsigned char>(content[0])] = true;
  }
  std::stable_sort(added_.begin(), added_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  decoder_.assign(static_cast<size_t>(size), "");
  is_added_.assign(static_cast<size_t>(size), false);
  for (const auto& [token, id] : vocab_) decoder_[id] = token;
  for (const auto& [content, id] : added_) {
    decoder_[id] = content;
    is_added_[id] = true;
  }
  for (int b = 0; b < 256; ++b) {
    const std::string token = byte_level_ ? byte_encoder_[b] : absl::StrFormat("<0x%02X>", b);
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.vocab has no token for byte ", b,
          byte_level_ ? ": not a byte-level BPE vocabulary" : " (" + token + ", byte_fallback)"));
    }
    byte_token_[b] = it->second;
    if (!byte_level_) byte_of_token_[it->second] = static_cast<uint8_t>(b);
  }
  for (const auto& m : model.value("merges", nlohmann::json::array())) {
    std::string left, right;
    if (m.is_string()) {
      const std::string text = m.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("merge '", text, "' has no space"));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", m.dump(), " is neither \"a b\" nor [\"a\", \"b\"]"));
    }
    // A merge of or into a string that is not a token never applies (as in tokenizers).
    const auto l = vocab_.find(left), r = vocab_.find(right), merged = vocab_.find(left + right);
    if (l == vocab_.end() || r == vocab_.end() || merged == vocab_.end()) continue;
    merges_.add(l->second, r->second, merged->second);
  }
  return absl::OkStatus();
}

void HfTokenizer::bpe(const std::string& word, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    const auto whole = vocab_.find(word);
    if (whole != vocab_.end()) {
      ids.push_back(whole->second);
      return;
    }
  }
  std::vector<int32_t> symbols;
  for (const std::string& c : utf8_characters(word)) {
    const auto it = vocab_.find(c);
    if (it != vocab_.end()) {
      symbols.push_back(it->second);
      continue;
    }
    // Byte-level stand-ins are all tokens (checked at load); others fall back to bytes.
    MOEFOLD_CHECK(!byte_level_, "byte-level stand-in '" << c << "' is not a token");
    for (unsigned char b : c) symbols.push_back(byte_token_[b]);  // byte_fallback
  }
  merges_.apply(symbols);
  ids.insert(ids.end(), symbols.begin(), symbols.end());
}

void HfTokenizer::encode_word(const std::string& word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  const bool cached = word.size() <= kMaxCachedWord;
  if (cached) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto hit = cache_.find(word);
    if (hit != cache_.end()) {
      ids.insert(ids.end(), hit->second.begin(), hit->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids;
  bpe(word, word_ids);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (!cached) return;
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(word, std::move(word_ids));
}

void HfTokenizer::encode_byte_level(const std::string& text, std::vector<int32_t>& ids) const {
  const std::string prefixed = add_prefix_space_ && text[0] != ' ' ? " " + text : text;
  std::vector<icu::UnicodeString> pieces = {icu::UnicodeString::fromUTF8(prefixed)};
  for (const auto& split : splits_) {
    std::vector<icu::UnicodeString> finer;
    for (const icu::UnicodeString& piece : pieces) {
      UErrorCode status = U_ZERO_ERROR;
      std::unique_ptr<icu::RegexMatcher> matcher(split->matcher(piece, status));
      MOEFOLD_CHECK(U_SUCCESS(status), "tokenizer regex: " << u_errorName(status));
      const auto keep = [&](int32_t start, int32_t end) {
        if (start < end) finer.emplace_back(piece, start, end - start);  // a copy: outlives piece
      };
      int32_t done = 0;
      while (matcher->find(status) && U_SUCCESS(status)) {
        keep(done, matcher->start(status));  // Isolated: the text between matches is a piece too
        keep(matcher->start(status), matcher->end(status));
        done = matcher->end(status);
      }
      keep(done, piece.length());
    }
    pieces = std::move(finer);
  }
  for (const icu::UnicodeString& piece : pieces) {  // as stand-ins, through BPE
    std::string bytes, word;
    piece.toUTF8String(bytes);
    for (unsigned char b : bytes) word += byte_encoder_[b];
    encode_word(word, ids);
  }
}

void HfTokenizer::encode_segment(const std::string& segment, bool at_start,
                                 std::vector<int32_t>& ids) const {
  if (segment.empty()) return;
  std::string text = segment;
  for (const NormalizerStep& step : normalizer_) {
    if (step.kind == NormalizerStep::kNfc) {
      UErrorCode status = U_ZERO_ERROR;
      const icu::UnicodeString normal = nfc_->normalize(icu::UnicodeString::fromUTF8(text), status);
      MOEFOLD_CHECK(U_SUCCESS(status), "NFC: " << u_errorName(status));
      text.clear();
      normal.toUTF8String(text);
    } else if (step.kind == NormalizerStep::kPrepend) {
      text = step.text + text;
    } else {
      text = absl::StrReplaceAll(text, {{step.from, step.text}});
    }
  }
  if (byte_level_) return encode_byte_level(text, ids);
  if (!metaspace_) return encode_word(text, ids);  // the normalizer did the spaces
  text = absl::StrReplaceAll(text, {{" ", space_}});
  const bool prepend = metaspace_prepend_ == Prepend::kAlways ||
                       (metaspace_prepend_ == Prepend::kFirst && at_start);
  if (prepend && text.compare(0, space_.size(), space_) != 0) text = space_ + text;
  if (!metaspace_split_) return encode_word(text, ids);
  size_t begin = 0;  // words begin at each replacement character
  for (size_t at = text.find(space_, 1); at != std::string::npos; at = text.find(space_, at + 1)) {
    encode_word(text.substr(begin, at - begin), ids);
    begin = at;
  }
  encode_word(text.substr(begin), ids);
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text) const {
  const std::string input(text);
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
    encode_segment(input.substr(plain, i - plain), plain == 0, ids);
    ids.push_back(match->second);
    i += match->first.size();
    plain = i;
  }
  encode_segment(input.substr(plain), plain == 0, ids);
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
    } else if (byte_level_) {
      for (const std::string& c : utf8_characters(decoder_[id])) {
        const auto b = byte_decoder_.find(c);
        text += b != byte_decoder_.end() ? std::string(1, static_cast<char>(b->second)) : c;
      }
    } else if (const auto b = byte_of_token_.find(id); b != byte_of_token_.end()) {
      text += static_cast<char>(b->second);
    } else {
      text += space_.empty() ? decoder_[id] : absl::StrReplaceAll(decoder_[id], {{space_, " "}});
    }
  }
  if (strip_leading_space_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace moefold
