#include "data/byte_level.h"

#include "tensor/check.h"
#include "unicode/utf8.h"

namespace moefold {

std::array<int32_t, 256> byte_level_code_points() {
  std::array<int32_t, 256> code_points{};
  int32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    code_points[b] = printable ? b : next++;
  }
  return code_points;
}

std::string utf8_of(int32_t code_point) {
  char buf[4];
  int32_t n = 0;
  UBool error = false;
  U8_APPEND(reinterpret_cast<uint8_t*>(buf), n, 4, code_point, error);
  MOEFOLD_CHECK(!error);
  return std::string(buf, n);
}

std::vector<std::string> utf8_characters(const std::string& text) {
  std::vector<std::string> out;
  int32_t i = 0;
  const int32_t n = static_cast<int32_t>(text.size());
  while (i < n) {
    const int32_t start = i;
    UChar32 c;
    U8_NEXT(reinterpret_cast<const uint8_t*>(text.data()), i, n, c);
    out.emplace_back(text.substr(start, i - start));
  }
  return out;
}

}  // namespace moefold
