#include "checkpoint/hdf5_file.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "parallel/watchdog.h"

namespace moefold {
namespace {

// Silences HDF5's own printing of its error stack for one call; the errors come back as Status.
class QuietHdf5Errors {
 public:
  QuietHdf5Errors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5Errors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5Errors(const QuietHdf5Errors&) = delete;
  QuietHdf5Errors& operator=(const QuietHdf5Errors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// One HDF5 identifier, closed with the matching H5?close when it goes out of scope.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// The most specific message on HDF5's error stack (where the error was detected), then clears it.
std::string innermost_reason() {
  std::string reason;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* error, void* out) -> herr_t {
        if (n == 0 && error->desc != nullptr) *static_cast<std::string*>(out) = error->desc;
        return 0;
      },
      &reason);
  H5Eclear2(H5E_DEFAULT);
  return reason;
}

// HDF5's POSIX driver reports a failed system call as "file write failed: time = <ctime, with a
// newline>, filename = ..., errno = 5, error message = '...', buf = ..., offset = ...": keep what
// failed and name the errno as moefold's other I/O errors do, on one line.
std::string condense_reason(const std::string& reason) {
  const size_t at = reason.find("errno = ");
  if (at == std::string::npos) return absl::StrReplaceAll(reason, {{"\n", " "}});
  const int code = std::atoi(reason.c_str() + at + 8);
  const char* name = strerrorname_np(code);
  return absl::StrCat(reason.substr(0, reason.find(": time = ")), ": ", std::strerror(code), " (",
                      name ? name : "errno", " ", code, ")");
}

absl::Status hdf5_error(absl::StatusCode code, const std::string& path, const std::string& what) {
  const std::string reason = condense_reason(innermost_reason());
  return absl::Status(code, absl::StrCat(path, ": ", what, reason.empty() ? "" : ": ", reason));
}

std::vector<hsize_t> to_hsize(const std::vector<int64_t>& v) {
  return std::vector<hsize_t>(v.begin(), v.end());
}

hid_t make_file_access(MPI_Comm comm) {
  const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  // The 1.8 format and newer: checksummed metadata, so corruption is detected on open.
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  if (comm != MPI_COMM_NULL) H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  return fapl;
}

}  // namespace

absl::StatusOr<Hdf5File> Hdf5File::create(const std::string& path, MPI_Comm comm) {
  QuietHdf5Errors quiet;
  Handle fapl(make_file_access(comm), H5Pclose);
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (file < 0) return hdf5_error(absl::StatusCode::kUnavailable, path, "cannot create HDF5 file");
  return Hdf5File(path, file, comm != MPI_COMM_NULL);
}

absl::StatusOr<Hdf5File> Hdf5File::open(const std::string& path, MPI_Comm comm) {
  QuietHdf5Errors quiet;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(path + ": no such file");
  }
  Handle fapl(make_file_access(comm), H5Pclose);
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (file < 0) {
    return hdf5_error(absl::StatusCode::kDataLoss, path,
                      "not a readable HDF5 file (truncated or corrupt)");
  }
  return Hdf5File(path, file, comm != MPI_COMM_NULL);
}

// The core driver's memory, followed through HDF5's file image callbacks: where it is and how
// large, and its last content, kept when the driver frees it at close.
struct CoreImage {
  void* data = nullptr;
  size_t size = 0;
  std::vector<char> closed;
};

namespace {

void* image_malloc(size_t size, H5FD_file_image_op_t, void* udata) {
  auto* image = static_cast<CoreImage*>(udata);
  image->data = std::malloc(size);
  image->size = image->data ? size : 0;
  return image->data;
}

void* image_memcpy(void* dest, const void* src, size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(dest, src, size);
}

void* image_realloc(void* ptr, size_t size, H5FD_file_image_op_t, void* udata) {
  auto* image = static_cast<CoreImage*>(udata);
  void* grown = std::realloc(ptr, size);
  if (grown == nullptr) return nullptr;
  image->data = grown;
  image->size = size;
  return grown;
}

herr_t image_free(void* ptr, H5FD_file_image_op_t op, void* udata) {
  auto* image = static_cast<CoreImage*>(udata);
  if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && ptr != nullptr && ptr == image->data) {
    image->closed.assign(static_cast<char*>(ptr), static_cast<char*>(ptr) + image->size);
  }
  if (ptr == image->data) image->data = nullptr;
  std::free(ptr);
  return 0;
}

void* image_udata_copy(void* udata) { return udata; }  // one CoreImage, shared
herr_t image_udata_free(void*) { return 0; }

}  // namespace

absl::StatusOr<Hdf5File> Hdf5File::create_in_memory(const std::string& path,
                                                    int64_t metadata_bytes) {
  QuietHdf5Errors quiet;
  auto image = std::make_unique<CoreImage>();
  Handle fapl(make_file_access(MPI_COMM_NULL), H5Pclose);
  H5Pset_fapl_core(fapl.get(), 64 << 10, /*backing_store=*/0);
  H5Pset_meta_block_size(fapl.get(), static_cast<hsize_t>(metadata_bytes));
  H5FD_file_image_callbacks_t callbacks = {image_malloc,     image_memcpy,     image_realloc,
                                           image_free,       image_udata_copy, image_udata_free,
                                           image.get()};
  H5Pset_file_image_callbacks(fapl.get(), &callbacks);
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (file < 0) return hdf5_error(absl::StatusCode::kInternal, path, "cannot lay out in memory");
  return Hdf5File(path, file, /*parallel=*/false, std::move(image));
}

absl::StatusOr<Hdf5FileImage> Hdf5File::close_to_image() {
  QuietHdf5Errors quiet;
  Hdf5FileImage out;
  hsize_t size = 0;  // the core driver's: the larger of its memory and HDF5's end of allocation
  if (image_ == nullptr || H5Fget_filesize(file_, &size) < 0) {
    return hdf5_error(absl::StatusCode::kInternal, path_, "no in-memory layout to close");
  }
  if (absl::Status s = close(); !s.ok()) return s;
  out.size = static_cast<int64_t>(size);
  out.bytes = std::move(image_->closed);
  out.bytes.resize(std::min(out.bytes.size(), static_cast<size_t>(size)));
  return out;
}

Hdf5File::Hdf5File(std::string path, hid_t file, bool parallel, std::unique_ptr<CoreImage> image)
    : path_(std::move(path)), file_(file), parallel_(parallel), image_(std::move(image)) {}

Hdf5File::Hdf5File(Hdf5File&& other) noexcept
    : path_(std::move(other.path_)),
      file_(other.file_),
      parallel_(other.parallel_),
      image_(std::move(other.image_)) {
  other.file_ = H5I_INVALID_HID;
}

Hdf5File& Hdf5File::operator=(Hdf5File&& other) noexcept {
  if (this != &other) {
    if (file_ >= 0) H5Fclose(file_);
    path_ = std::move(other.path_);
    file_ = other.file_;
    parallel_ = other.parallel_;
    image_ = std::move(other.image_);
    other.file_ = H5I_INVALID_HID;
  }
  return *this;
}

Hdf5File::~Hdf5File() {
  if (file_ >= 0) {
    QuietHdf5Errors quiet;
    H5Fclose(file_);
  }
}

absl::Status Hdf5File::close() {
  QuietHdf5Errors quiet;
  const hid_t file = file_;
  file_ = H5I_INVALID_HID;
  if (file < 0) return absl::OkStatus();
  // Collective (metadata flush, truncate): timed like any other wait.
  std::optional<watchdog::BlockedScope> blocked;
  if (parallel_) {
    blocked.emplace("a collective HDF5 close",
                    std::make_shared<const std::string>(absl::StrCat("world (", path_, ")")));
  }
  if (H5Fclose(file) < 0) return hdf5_error(absl::StatusCode::kDataLoss, path_, "close failed");
  return absl::OkStatus();
}

absl::Status Hdf5File::create_dataset(const std::string& name,
                                      const std::vector<int64_t>& global_shape) {
  QuietHdf5Errors quiet;
  const std::vector<hsize_t> dims = to_hsize(global_shape);
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);  // every element is written by some rank
  H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY);
  H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS);  // one block at dataset_offset()
  Handle dataset(H5Dcreate2(file_, name.c_str(), H5T_IEEE_F32LE, space.get(), lcpl.get(),
                            dcpl.get(), H5P_DEFAULT),
                 H5Dclose);
  if (!space.ok() || !dataset.ok()) {
    return hdf5_error(absl::StatusCode::kUnavailable, path_, "cannot create tensor '" + name + "'");
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Hdf5File::dataset_offset(const std::string& name) const {
  QuietHdf5Errors quiet;
  Handle dataset(H5Dopen2(file_, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.ok()) {
    return hdf5_error(absl::StatusCode::kNotFound, path_, "no tensor '" + name + "'");
  }
  Handle space(H5Dget_space(dataset.get()), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) == 0) return 0;
  const haddr_t offset = H5Dget_offset(dataset.get());
  if (offset == HADDR_UNDEF) {
    return hdf5_error(absl::StatusCode::kInternal, path_,
                      "tensor '" + name + "' is not stored contiguously");
  }
  return static_cast<int64_t>(offset);
}

namespace {

std::vector<RunSlab> box_slabs(const HyperslabF32* slice) {
  if (slice == nullptr) return {};
  return {RunSlab{slice->offset, slice->shape, 0}};
}

}  // namespace

absl::Status Hdf5File::write(const std::string& name, const HyperslabF32* slice) {
  return transfer(name, box_slabs(slice), slice ? slice->data : nullptr, /*write=*/true);
}

absl::Status Hdf5File::read(const std::string& name, const HyperslabF32* slice) {
  return transfer(name, box_slabs(slice), slice ? slice->data : nullptr, /*write=*/false);
}

absl::Status Hdf5File::write_slabs(const std::string& name, const std::vector<RunSlab>& slabs,
                                   const float* data) {
  // HDF5 only reads from the buffer of a write.
  return transfer(name, slabs, const_cast<float*>(data), /*write=*/true);
}

absl::Status Hdf5File::read_slabs(const std::string& name, const std::vector<RunSlab>& slabs,
                                  float* data) {
  return transfer(name, slabs, data, /*write=*/false);
}

absl::Status Hdf5File::transfer(const std::string& name, const std::vector<RunSlab>& slabs,
                                float* data, bool write) {
  QuietHdf5Errors quiet;
  const char* verb = write ? "cannot write" : "cannot read";
  Handle dataset(H5Dopen2(file_, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.ok()) {
    return hdf5_error(absl::StatusCode::kNotFound, path_,
                      absl::StrCat(verb, " tensor '", name, "'"));
  }
  Handle file_space(H5Dget_space(dataset.get()), H5Sclose);
  const int ndim = H5Sget_simple_extent_ndims(file_space.get());
  int64_t numel = 0;
  for (const RunSlab& slab : slabs) {
    if (static_cast<int>(slab.start.size()) != ndim ||
        static_cast<int>(slab.count.size()) != ndim) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", name, "' has ", ndim,
                                                     " dimensions, the slice ",
                                                     slab.count.size()));
    }
    int64_t n = 1;
    for (int64_t d : slab.count) n *= d;
    numel += n;
  }
  // Ranks with nothing to transfer still take part, with an empty selection.
  const bool has_data = numel > 0;
  const hsize_t memory_count = has_data ? static_cast<hsize_t>(numel) : 1;
  Handle memory_space(H5Screate_simple(1, &memory_count, nullptr), H5Sclose);
  herr_t selected = H5Sselect_none(file_space.get());
  for (const RunSlab& slab : slabs) {
    const std::vector<hsize_t> start = to_hsize(slab.start), count = to_hsize(slab.count);
    if (selected >= 0 && !count.empty() &&
        std::find(count.begin(), count.end(), hsize_t{0}) == count.end()) {
      selected = H5Sselect_hyperslab(file_space.get(), H5S_SELECT_OR, start.data(), nullptr,
                                     count.data(), nullptr);
    }
  }
  if (!has_data) selected = std::min(selected, H5Sselect_none(memory_space.get()));
  if (selected < 0 || (has_data && H5Sselect_valid(file_space.get()) <= 0)) {
    const RunSlab& first = slabs.front();
    return hdf5_error(absl::StatusCode::kInvalidArgument, path_,
                      absl::StrCat("slice [", absl::StrJoin(first.start, ", "), "] + [",
                                   absl::StrJoin(first.count, ", "), "] lies outside tensor '",
                                   name, "'"));
  }
  Handle transfer_list(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  if (parallel_) H5Pset_dxpl_mpio(transfer_list.get(), H5FD_MPIO_COLLECTIVE);
  // A collective transfer waits inside MPI-IO for every rank: timed like any other wait.
  std::optional<watchdog::BlockedScope> blocked;
  if (parallel_) {
    blocked.emplace(write ? "a collective HDF5 write" : "a collective HDF5 read",
                    std::make_shared<const std::string>(
                        absl::StrCat("world (", path_, ", tensor '", name, "')")));
  }
  float unused = 0;  // HDF5 wants a buffer even for an empty selection
  float* buffer = has_data ? data : &unused;
  const herr_t status = write ? H5Dwrite(dataset.get(), H5T_NATIVE_FLOAT, memory_space.get(),
                                         file_space.get(), transfer_list.get(), buffer)
                              : H5Dread(dataset.get(), H5T_NATIVE_FLOAT, memory_space.get(),
                                        file_space.get(), transfer_list.get(), buffer);
  if (status < 0) {
    return hdf5_error(absl::StatusCode::kDataLoss, path_,
                      absl::StrCat(verb, " tensor '", name, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> Hdf5File::dataset_shape(const std::string& name) const {
  QuietHdf5Errors quiet;
  // H5Lexists needs every parent link to exist, so walk the path one component at a time.
  std::string prefix;
  for (absl::string_view part : absl::StrSplit(name, '/', absl::SkipEmpty())) {
    absl::StrAppend(&prefix, prefix.empty() ? "" : "/", part);
    if (H5Lexists(file_, prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return absl::NotFoundError(absl::StrCat(path_, ": missing tensor '", name, "'"));
    }
  }
  Handle object(H5Oopen(file_, name.c_str(), H5P_DEFAULT), H5Oclose);
  if (!object.ok() || H5Iget_type(object.get()) != H5I_DATASET) {
    H5Eclear2(H5E_DEFAULT);
    return absl::InvalidArgumentError(absl::StrCat(path_, ": '", name, "' is not a tensor"));
  }
  Handle type(H5Dget_type(object.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_FLOAT || H5Tget_size(type.get()) != 4) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", name, "' is not float32"));
  }
  Handle space(H5Dget_space(object.get()), H5Sclose);
  const int ndim = H5Sget_simple_extent_ndims(space.get());
  if (ndim < 0) return hdf5_error(absl::StatusCode::kDataLoss, path_, "tensor '" + name + "'");
  std::vector<hsize_t> dims(ndim);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

absl::StatusOr<std::vector<std::string>> Hdf5File::list_datasets() const {
  QuietHdf5Errors quiet;
  struct Visit {
    hid_t file;
    std::vector<std::string> names;
  } visit{file_, {}};
  const herr_t status = H5Lvisit(
      file_, H5_INDEX_NAME, H5_ITER_INC,
      [](hid_t group, const char* name, const H5L_info_t*, void* data) -> herr_t {
        Handle object(H5Oopen(group, name, H5P_DEFAULT), H5Oclose);
        if (object.ok() && H5Iget_type(object.get()) == H5I_DATASET) {
          static_cast<Visit*>(data)->names.emplace_back(name);
        }
        return 0;
      },
      &visit);
  if (status < 0) return hdf5_error(absl::StatusCode::kDataLoss, path_, "cannot list tensors");
  return visit.names;
}

absl::Status Hdf5File::write_attribute(const std::string& name, const Hdf5Attribute& value) {
  QuietHdf5Errors quiet;
  hid_t file_type = H5I_INVALID_HID;
  hid_t memory_type = H5I_INVALID_HID;
  const void* buffer = nullptr;
  Handle string_type(H5Tcopy(H5T_C_S1), H5Tclose);
  hid_t space_id = H5Screate(H5S_SCALAR);
  if (const auto* i = std::get_if<int64_t>(&value)) {
    file_type = H5T_STD_I64LE;
    memory_type = H5T_NATIVE_INT64;
    buffer = i;
  } else if (const auto* d = std::get_if<double>(&value)) {
    file_type = H5T_IEEE_F64LE;
    memory_type = H5T_NATIVE_DOUBLE;
    buffer = d;
  } else if (const auto* s = std::get_if<std::string>(&value)) {
    H5Tset_size(string_type.get(), s->size() + 1);
    H5Tset_strpad(string_type.get(), H5T_STR_NULLTERM);
    file_type = memory_type = string_type.get();
    buffer = s->c_str();
  } else {
    const auto& list = std::get<std::vector<int64_t>>(value);
    H5Sclose(space_id);
    const hsize_t n = list.size();
    space_id = list.empty() ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr);
    file_type = H5T_STD_I64LE;
    memory_type = H5T_NATIVE_INT64;
    buffer = list.data();
  }
  Handle space(space_id, H5Sclose);
  Handle attribute(
      H5Acreate2(file_, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const bool empty = H5Sget_simple_extent_type(space.get()) == H5S_NULL;  // nothing to write
  if (!attribute.ok() || (!empty && H5Awrite(attribute.get(), memory_type, buffer) < 0)) {
    return hdf5_error(absl::StatusCode::kUnavailable, path_,
                      "cannot write attribute '" + name + "'");
  }
  return absl::OkStatus();
}

absl::StatusOr<Hdf5Attribute> Hdf5File::read_attribute(const std::string& name) const {
  QuietHdf5Errors quiet;
  if (H5Aexists(file_, name.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return absl::NotFoundError(absl::StrCat(path_, ": missing attribute '", name, "'"));
  }
  Handle attribute(H5Aopen(file_, name.c_str(), H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(attribute.get()), H5Tclose);
  Handle space(H5Aget_space(attribute.get()), H5Sclose);
  const auto fail = [&] {
    return hdf5_error(absl::StatusCode::kDataLoss, path_, "cannot read attribute '" + name + "'");
  };
  if (!attribute.ok() || !type.ok() || !space.ok()) return fail();
  const H5S_class_t shape = H5Sget_simple_extent_type(space.get());
  switch (H5Tget_class(type.get())) {
    case H5T_INTEGER: {
      if (shape == H5S_SCALAR) {
        int64_t v = 0;
        if (H5Aread(attribute.get(), H5T_NATIVE_INT64, &v) < 0) return fail();
        return Hdf5Attribute(v);
      }
      std::vector<int64_t> list(shape == H5S_NULL ? 0 : H5Sget_simple_extent_npoints(space.get()));
      if (!list.empty() && H5Aread(attribute.get(), H5T_NATIVE_INT64, list.data()) < 0) {
        return fail();
      }
      return Hdf5Attribute(std::move(list));
    }
    case H5T_FLOAT: {
      double v = 0;
      if (shape != H5S_SCALAR || H5Aread(attribute.get(), H5T_NATIVE_DOUBLE, &v) < 0) {
        return fail();
      }
      return Hdf5Attribute(v);
    }
    case H5T_STRING: {
      if (shape != H5S_SCALAR || H5Tis_variable_str(type.get()) > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ": attribute '", name, "' is not a fixed-length string"));
      }
      std::string text(H5Tget_size(type.get()), '\0');
      if (H5Aread(attribute.get(), type.get(), text.data()) < 0) return fail();
      text.resize(text.find('\0') == std::string::npos ? text.size() : text.find('\0'));
      return Hdf5Attribute(std::move(text));
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": attribute '", name, "' has an unsupported type"));
  }
}

absl::StatusOr<std::vector<std::string>> Hdf5File::list_attributes() const {
  QuietHdf5Errors quiet;
  std::vector<std::string> names;
  const herr_t status = H5Aiterate2(
      file_, H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
        static_cast<std::vector<std::string>*>(data)->emplace_back(name);
        return 0;
      },
      &names);
  if (status < 0) return hdf5_error(absl::StatusCode::kDataLoss, path_, "cannot list attributes");
  return names;
}

std::string format_attribute(const Hdf5Attribute& value) {
  if (const auto* i = std::get_if<int64_t>(&value)) return absl::StrCat(*i);
  if (const auto* d = std::get_if<double>(&value)) return absl::StrCat(*d);
  if (const auto* s = std::get_if<std::string>(&value)) return absl::StrCat("\"", *s, "\"");
  return absl::StrCat("[", absl::StrJoin(std::get<std::vector<int64_t>>(value), ", "), "]");
}

}  // namespace moefold
