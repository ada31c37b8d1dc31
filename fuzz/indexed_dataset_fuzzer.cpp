// The Megatron .idx/.bin reader on arbitrary files: open() validates, then every token of every
// sequence can be read (or is one error), and nothing reads out of bounds. The input is
// [uint32 little-endian length of the .idx][the .idx][the .bin].
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t idx_size = 0;
  std::memcpy(&idx_size, data, 4);
  if (idx_size > size - 4) return 0;
  static const std::string prefix = "/tmp/moefold_fuzz_idx_" + std::to_string(::getpid());
  std::ofstream(prefix + ".idx", std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data + 4), idx_size);
  std::ofstream(prefix + ".bin", std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data + 4 + idx_size),
             static_cast<std::streamsize>(size - 4 - idx_size));
  auto dataset = moefold::IndexedDataset::open(prefix);
  if (!dataset.ok()) return 0;
  (void)(*dataset)->check_token_ids(50257);
  std::vector<int32_t> tokens;
  for (int64_t s = 0; s < (*dataset)->num_sequences(); ++s) {
    tokens.clear();
    (void)(*dataset)->read(s, 0, (*dataset)->sequence_lengths()[s], 0, &tokens);
  }
  return 0;
}
