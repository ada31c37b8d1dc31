// The recipe parser and validator on arbitrary YAML: every input is a recipe or one error line;
// nothing may crash, throw, or print more than one line. A parsed recipe survives its own YAML.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "trainer/config_parse.h"
#include "trainer/config_schema.h"
#include "trainer/config_validate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto recipe = moefold::parse_recipe_string(text, "fuzz.yaml", {});
  if (!recipe.ok()) {
    if (recipe.status().message().find('\n') != std::string::npos) {
      std::fprintf(stderr, "more than one line: %s\n", recipe.status().ToString().c_str());
      std::abort();
    }
    return 0;
  }
  for (int world : {1, 4, 6}) {
    const absl::Status valid = moefold::validate_recipe_for_world(*recipe, world);
    if (!valid.ok() && valid.message().find('\n') != std::string::npos) std::abort();
  }
  auto again = moefold::parse_recipe_string(moefold::recipe_to_yaml(*recipe), "again.yaml", {});
  if (!again.ok()) std::abort();  // what we print, we must read back
  return 0;
}
