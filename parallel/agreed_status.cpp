#include "parallel/agreed_status.h"

#include "absl/strings/cord.h"

namespace moefold {
namespace {

constexpr const char* kAgreedPayload = "moefold/agreed-by-every-rank";

}  // namespace

absl::Status mark_agreed(absl::Status status) {
  if (!status.ok()) status.SetPayload(kAgreedPayload, absl::Cord("1"));
  return status;
}

bool is_agreed(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kAgreedPayload).has_value();
}

}  // namespace moefold
