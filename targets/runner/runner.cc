// shiftc board runner: loads a shiftc model library and runs its Relax "main" function.
//
//   runner MODEL.so OUT_DIR [--repeat N] IN_0.npy [IN_1.npy ...]
//
// Inputs are NumPy .npy files (format v1/v2/v3, C order, little-endian), one per model input in
// model order. Every output (a tensor or a nested tuple of tensors, flattened depth-first) is
// written as OUT_DIR/output_<i>.npy. Supported dtypes: bool, int8/16/32/64, uint8/16/32/64,
// float16/32/64. With --repeat N the model runs N more times and the mean latency is printed.
// Exit status: 0 ok, 2 bad usage or input file, 1 runtime error.

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

struct CPUAlloc {
  void AllocData(DLTensor* t) { t->data = std::malloc(ffi::GetDataSize(*t) + 1); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct DTypeName {
  const char* descr;  // numpy descr without the byte-order character
  DLDataType dtype;
};

const DTypeName kDTypes[] = {
    {"b1", {kDLBool, 8, 1}},   {"i1", {kDLInt, 8, 1}},    {"i2", {kDLInt, 16, 1}},
    {"i4", {kDLInt, 32, 1}},   {"i8", {kDLInt, 64, 1}},   {"u1", {kDLUInt, 8, 1}},
    {"u2", {kDLUInt, 16, 1}},  {"u4", {kDLUInt, 32, 1}},  {"u8", {kDLUInt, 64, 1}},
    {"f2", {kDLFloat, 16, 1}}, {"f4", {kDLFloat, 32, 1}}, {"f8", {kDLFloat, 64, 1}},
};

struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

DLDataType DTypeFromDescr(const std::string& descr) {
  // '<f4', '|i1', '=i8': one byte-order character then the type code.
  if (descr.size() == 3 && descr[0] != '>') {
    for (const auto& d : kDTypes)
      if (descr.compare(1, 2, d.descr) == 0) return d.dtype;
  }
  throw BadInput("unsupported .npy dtype '" + descr + "' (big-endian and object arrays are not supported)");
}

std::string DescrFromDType(DLDataType t) {
  for (const auto& d : kDTypes)
    if (d.dtype.code == t.code && d.dtype.bits == t.bits && t.lanes == 1)
      return std::string(t.bits == 8 ? "|" : "<") + d.descr;
  throw std::runtime_error("output dtype code " + std::to_string(t.code) + " bits " + std::to_string(t.bits) +
                           " cannot be written as .npy");
}

// The value of 'key' in a numpy header dict, e.g. "'descr': '<f4'," -> "'<f4'".
std::string HeaderField(const std::string& header, const std::string& key) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw BadInput("npy header has no '" + key + "'");
  size_t start = header.find(':', k) + 1;
  while (header[start] == ' ') ++start;
  size_t end = header[start] == '(' ? header.find(')', start) + 1 : header.find_first_of(",}", start);
  return header.substr(start, end - start);
}

ffi::Tensor ReadNpy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw BadInput("cannot open " + path);
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw BadInput(path + " is not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  f.read(&header[0], header_len);
  if (HeaderField(header, "fortran_order") != "False") throw BadInput(path + ": Fortran-order arrays are not supported");
  std::string descr = HeaderField(header, "descr");
  DLDataType dtype = DTypeFromDescr(descr.substr(1, descr.size() - 2));
  std::vector<int64_t> shape;
  std::string dims = HeaderField(header, "shape");
  std::stringstream ss(dims.substr(1, dims.size() - 2));
  for (std::string d; std::getline(ss, d, ',');)
    if (d.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(d));
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()), dtype,
                                           DLDevice{kDLCPU, 0});
  size_t nbytes = ffi::GetDataSize(t.numel(), dtype);
  f.read(static_cast<char*>(t.data_ptr()), nbytes);
  if (static_cast<size_t>(f.gcount()) != nbytes) throw BadInput(path + " is truncated");
  return t;
}

void WriteNpy(const std::string& path, const ffi::Tensor& t) {
  std::string shape = "(";
  for (int i = 0; i < t.ndim(); ++i) shape += std::to_string(t.size(i)) + (t.ndim() == 1 ? "," : i + 1 < t.ndim() ? ", " : "");
  shape += ")";
  std::string header = "{'descr': '" + DescrFromDType(t.dtype()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // magic(6) + version(2) + len(2) + header + '\n' padded to a multiple of 64
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  char lb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(lb, 2);
  f.write(header.data(), header.size());
  if (!t.IsContiguous()) throw std::runtime_error("output tensor is not contiguous");
  f.write(static_cast<const char*>(t.data_ptr()) + t.byte_offset(), ffi::GetDataSize(t.numel(), t.dtype()));
}

// A VM result is a tensor or a (nested) array of them; flatten depth-first.
void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& v : *arr) Flatten(v, out);
  } else {
    throw std::runtime_error("model returned a value that is neither a tensor nor a tuple: " + value.GetTypeKey());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  int repeat = 0;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--repeat") {
      repeat = std::atoi(args[i + 1].c_str());
      args.erase(args.begin() + i, args.begin() + i + 2);
      break;
    }
  }
  if (args.size() < 2) {
    std::cerr << "usage: runner MODEL.so OUT_DIR [--repeat N] IN_0.npy [IN_1.npy ...]\n";
    return 2;
  }
  std::vector<ffi::Tensor> inputs;
  try {
    for (size_t i = 2; i < args.size(); ++i) inputs.push_back(ReadNpy(args[i]));
  } catch (const BadInput& e) {
    std::cerr << "runner: " << e.what() << "\n";
    return 2;
  }
  try {
    // dlopen searches the library path for a bare file name; make it a path.
    std::string lib_path = args[0].find('/') == std::string::npos ? "./" + args[0] : args[0];
    ffi::Module lib = ffi::Module::LoadFromFile(lib_path);
    ffi::Module vm = lib->GetFunction("vm_load_executable", true).value()().cast<ffi::Module>();
    // (device type, device id, allocator kind) for the one device: CPU 0, pooled allocator.
    vm->GetFunction("vm_initialization", false).value()(static_cast<int>(kDLCPU), 0, 2);
    ffi::Function main_fn = vm->GetFunction("main", false).value();

    std::vector<ffi::AnyView> packed(inputs.begin(), inputs.end());
    auto call = [&] {
      ffi::Any result;
      main_fn.CallPacked(packed.data(), static_cast<int32_t>(packed.size()), &result);
      return result;
    };
    ffi::Any result = call();
    std::vector<ffi::Tensor> outputs;
    Flatten(result, &outputs);
    for (size_t i = 0; i < outputs.size(); ++i) WriteNpy(args[1] + "/output_" + std::to_string(i) + ".npy", outputs[i]);
    if (repeat > 0) {
      auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < repeat; ++r) call();
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / repeat;
      std::printf("mean latency over %d runs: %.3f ms\n", repeat, ms);
    }
    std::printf("wrote %zu output(s) to %s\n", outputs.size(), args[1].c_str());
  } catch (const std::exception& e) {
    std::cerr << "runner: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
