#include "checkpoint/tensor_file_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint_dir.h"

namespace moefold {
namespace {

// The datasets are H5T_IEEE_F32LE and the bytes are copied as they are in memory.
static_assert(std::endian::native == std::endian::little, "checkpoint files are little-endian");

// Writes all `bytes` at `offset`, resuming after short writes; false with errno set on error.
bool write_fully(int fd, const char* data, int64_t bytes, int64_t offset) {
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd, data, static_cast<size_t>(bytes), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      errno = EIO;
      return false;
    }
    data += n;
    bytes -= n;
    offset += n;
  }
  return true;
}

}  // namespace

absl::StatusOr<TensorFileWriter> TensorFileWriter::create(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_error(path, "cannot create");
  return TensorFileWriter(path, fd);
}

absl::StatusOr<TensorFileWriter> TensorFileWriter::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno_error(path, "cannot open for writing");
  return TensorFileWriter(path, fd);
}

TensorFileWriter::TensorFileWriter(TensorFileWriter&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_) {
  other.fd_ = -1;
}

TensorFileWriter::~TensorFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status TensorFileWriter::write_layout(const std::vector<char>& bytes, int64_t size) {
  if (!write_fully(fd_, bytes.data(), static_cast<int64_t>(bytes.size()), 0)) {
    return errno_error(path_, "cannot write the HDF5 layout");
  }
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
    return errno_error(path_, "cannot set the file's length");
  }
  return absl::OkStatus();
}

absl::Status TensorFileWriter::write_slabs(const std::string& tensor, int64_t dataset_offset,
                                           const std::vector<int64_t>& global_shape,
                                           const std::vector<RunSlab>& slabs, const float* data) {
  const int ndim = static_cast<int>(global_shape.size());
  for (const RunSlab& slab : slabs) {
    int64_t numel = 1;
    for (int64_t c : slab.count) numel *= c;
    if (numel == 0) continue;
    // Axes [inner, ndim) that the slab spans whole, with the axis before them, are one
    // contiguous block of the file; the axes before that are walked one block at a time.
    int inner = ndim;
    while (inner > 0 && slab.count[inner - 1] == global_shape[inner - 1]) --inner;
    const int outer = inner > 0 ? inner - 1 : 0;
    int64_t block = 1;
    for (int d = outer; d < ndim; ++d) block *= slab.count[d];
    std::vector<int64_t> index(slab.start.begin(), slab.start.begin() + outer);
    const float* source = data + slab.data_offset;
    for (int64_t written = 0; written < numel; written += block) {
      int64_t element = 0;  // the global row-major index of the block's first element
      for (int d = 0; d < ndim; ++d) {
        element = element * global_shape[d] + (d < outer ? index[d] : slab.start[d]);
      }
      if (!write_fully(fd_, reinterpret_cast<const char*>(source + written),
                       block * int64_t{sizeof(float)},
                       dataset_offset + element * int64_t{sizeof(float)})) {
        return errno_error(path_, absl::StrCat("cannot write tensor '", tensor, "'").c_str());
      }
      for (int d = outer - 1; d >= 0; --d) {  // the next block: an odometer over the outer axes
        if (++index[d] < slab.start[d] + slab.count[d]) break;
        index[d] = slab.start[d];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status TensorFileWriter::finish() {
  const int fd = fd_;
  fd_ = -1;
  if (fd < 0) return absl::OkStatus();
  if (::fdatasync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return errno_error(path_, "cannot sync the written tensors");
  }
  if (::close(fd) != 0) return errno_error(path_, "cannot close after writing");
  return absl::OkStatus();
}

}  // namespace moefold
