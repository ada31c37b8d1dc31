#include "data/gpt_dataset.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "tensor/check.h"

namespace moefold {
namespace {

constexpr char kCacheMagic[8] = {'M', 'F', 'G', 'P', 'T', 'I', 'X', '1'};

uint64_t fnv1a64(const std::string& text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string absolute(const std::string& path) {
  std::error_code ec;
  const auto abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

template <typename T>
void write_array(std::ofstream& out, const std::vector<T>& values) {
  const uint64_t n = values.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(reinterpret_cast<const char*>(values.data()), n * sizeof(T));
}

template <typename T>
bool read_array(std::ifstream& in, uint64_t max_count, std::vector<T>* values) {
  uint64_t n = 0;
  if (!in.read(reinterpret_cast<char*>(&n), 8) || n > max_count) return false;
  values->resize(n);
  return static_cast<bool>(in.read(reinterpret_cast<char*>(values->data()), n * sizeof(T)));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const GptDataset>> GptDataset::build(
    std::shared_ptr<const IndexedDataset> indexed, int64_t first_sequence, int64_t end_sequence,
    const GptDatasetOptions& options) {
  const std::string& prefix = indexed->prefix();
  if (options.seq_length <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": seq_length must be positive, got ", options.seq_length));
  }
  MOEFOLD_CHECK(0 <= first_sequence && first_sequence <= end_sequence &&
                    end_sequence <= indexed->num_sequences(),
                "sequence range [" << first_sequence << ", " << end_sequence << ")");
  int64_t tokens_per_epoch = 0;
  uint64_t lengths_hash = 0xcbf29ce484222325ULL;
  for (int64_t s = first_sequence; s < end_sequence; ++s) {
    tokens_per_epoch += indexed->sequence_lengths()[s];
    lengths_hash = (lengths_hash ^ static_cast<uint32_t>(indexed->sequence_lengths()[s])) *
                   0x100000001b3ULL;
  }
  if (tokens_per_epoch < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        prefix, ": the ", options.split_name, " split (sequences ", first_sequence, " to ",
        end_sequence, ") holds ", tokens_per_epoch,
        " tokens; a sample needs at least 2 (adjust the split or add data)"));
  }

  std::shared_ptr<GptDataset> ds(new GptDataset());
  ds->indexed_ = std::move(indexed);
  ds->first_sequence_ = first_sequence;
  ds->end_sequence_ = end_sequence;
  ds->options_ = options;

  // Everything the indices depend on; the cache file name is its hash, and the file repeats
  // it so that a hash collision or a changed dataset is noticed.
  const std::string description = absl::StrCat(
      "moefold GptDataset indices v1\nprefix=", absolute(prefix),
      "\nsequences=", ds->indexed_->num_sequences(), "\ntokens=", ds->indexed_->num_tokens(),
      "\nlengths_hash=", lengths_hash,
      "\nrange=", first_sequence, ",", end_sequence, "\nseq_length=", options.seq_length,
      "\nnum_samples=", options.num_samples, "\nseed=", options.seed, "\n");
  if (options.use_cache) {
    const std::filesystem::path prefix_path(prefix);
    const std::filesystem::path dir =
        options.cache_dir.empty() ? prefix_path.parent_path() / "cache"
                                  : std::filesystem::path(options.cache_dir);
    char hash[17];
    std::snprintf(hash, sizeof(hash), "%016llx",
                  static_cast<unsigned long long>(fnv1a64(description)));
    ds->cache_file_ = (dir / absl::StrCat(hash, "-", prefix_path.filename().string(), "-",
                                          options.split_name, "-gpt_indices.bin"))
                          .string();
    ds->loaded_from_cache_ = ds->load_cache(description);
  }
  if (!ds->loaded_from_cache_) {
    ds->build_indices(tokens_per_epoch);
    if (options.use_cache) ds->save_cache(description);
  }
  if (ds->size() < options.num_samples) {
    return absl::InternalError(absl::StrCat(ds->describe(), ": built ", ds->size(),
                                            " samples, ", options.num_samples, " requested"));
  }
  return std::shared_ptr<const GptDataset>(std::move(ds));
}

void GptDataset::build_indices(int64_t tokens_per_epoch) {
  const EpochPlan plan = plan_epochs(tokens_per_epoch, options_.seq_length, options_.num_samples);
  num_epochs_ = plan.num_epochs;
  std::vector<int64_t> documents(end_sequence_ - first_sequence_);
  for (size_t i = 0; i < documents.size(); ++i) documents[i] = first_sequence_ + i;
  // One generator drawn in Megatron's order: document index first, then shuffle index.
  NumpyRandomState rng(options_.seed);
  document_index_ = build_document_index(documents, plan, &rng);
  sample_index_ = build_sample_index(indexed_->sequence_lengths(), document_index_,
                                     options_.seq_length, plan.num_epochs, tokens_per_epoch);
  const int64_t total = static_cast<int64_t>(sample_index_.size()) - 1;
  shuffle_index_ = build_shuffle_index(
      plan.separate_final_epoch ? plan.samples_before_final_epoch : total, total, &rng);
}

bool GptDataset::load_cache(const std::string& description) {
  std::ifstream in(cache_file_, std::ios::binary);
  if (!in) return false;
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, kCacheMagic, 8) != 0) return false;
  std::vector<char> text;
  if (!read_array(in, 1 << 16, &text)) return false;
  if (std::string(text.begin(), text.end()) != description) return false;
  int64_t epochs = 0;
  if (!in.read(reinterpret_cast<char*>(&epochs), 8) || epochs < 1) return false;
  const uint64_t limit = static_cast<uint64_t>(1) << 40;
  if (!read_array(in, limit, &document_index_) || !read_array(in, limit, &sample_index_) ||
      !read_array(in, limit, &shuffle_index_)) {
    return false;
  }
  // Cheap consistency checks so a damaged cache is rebuilt rather than trusted.
  const int64_t documents = static_cast<int64_t>(document_index_.size());
  if (sample_index_.size() != shuffle_index_.size() + 1 ||
      documents != epochs * (end_sequence_ - first_sequence_)) {
    return false;
  }
  for (const SampleBoundary& b : sample_index_) {
    if (b.document_position < 0 || b.document_position >= documents) return false;
  }
  for (int64_t s : document_index_) {
    if (s < first_sequence_ || s >= end_sequence_) return false;
  }
  for (int64_t s : shuffle_index_) {
    if (s < 0 || s >= static_cast<int64_t>(shuffle_index_.size())) return false;
  }
  num_epochs_ = epochs;
  return true;
}

void GptDataset::save_cache(const std::string& description) const {
  std::error_code ec;
  const std::filesystem::path target(cache_file_);
  std::filesystem::create_directories(target.parent_path(), ec);
  // Several ranks may build the same indices at once: each writes its own temporary file and
  // renames it into place, which is atomic, so a reader never sees a partial file.
  const std::string temporary =
      absl::StrCat(cache_file_, ".tmp.", ::getpid(), ".", std::random_device{}());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (out) {
      out.write(kCacheMagic, 8);
      write_array(out, std::vector<char>(description.begin(), description.end()));
      out.write(reinterpret_cast<const char*>(&num_epochs_), 8);
      write_array(out, document_index_);
      write_array(out, sample_index_);
      write_array(out, shuffle_index_);
    }
    if (!out || !out.flush()) {
      std::fprintf(stderr, "moefold: cannot write the index cache %s; continuing without it\n",
                   cache_file_.c_str());
      std::filesystem::remove(temporary, ec);
      return;
    }
  }
  std::filesystem::rename(temporary, target, ec);
  if (ec) std::filesystem::remove(temporary, ec);
}

absl::Status GptDataset::sample(int64_t index, std::vector<int32_t>* out_S1) const {
  MOEFOLD_CHECK(index >= 0 && index < size(), "sample " << index << " of " << size());
  const int64_t shuffled = shuffle_index_[index];
  const SampleBoundary begin = sample_index_[shuffled];
  const SampleBoundary end = sample_index_[shuffled + 1];
  const int64_t vocab = options_.vocab_size;
  const size_t start_size = out_S1->size();
  const auto& sizes = indexed_->sequence_lengths();
  for (int64_t p = begin.document_position; p <= end.document_position; ++p) {
    const int64_t sequence = document_index_[p];
    const int64_t from = p == begin.document_position ? begin.offset : 0;
    const int64_t to = p == end.document_position ? end.offset + 1 : sizes[sequence];
    if (absl::Status s = indexed_->read(sequence, from, to - from, vocab, out_S1); !s.ok()) {
      return s;
    }
  }
  MOEFOLD_CHECK(static_cast<int64_t>(out_S1->size() - start_size) == options_.seq_length + 1,
                "sample " << index << " has " << out_S1->size() - start_size << " tokens");
  return absl::OkStatus();
}

std::string GptDataset::describe() const {
  return absl::StrCat(options_.split_name, " split of ", indexed_->prefix());
}

}  // namespace moefold
