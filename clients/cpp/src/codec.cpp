// Bodies in msgpack: requests, replies, the ndarray extension type, JSON text of any body.
#include "mlp/codec.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

namespace mlp {

namespace {

bool little_endian_host() {
  const std::uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// `size` bytes at `src` in the byte order the sender named, as a host-order value of type T.
template <typename T>
T load(const unsigned char* src, bool swap) {
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, src, sizeof(T));
  if (swap) std::reverse(bytes, bytes + sizeof(T));
  T value;
  std::memcpy(&value, bytes, sizeof(T));
  return value;
}

// One element of an ndarray payload as a double; the dtype is checked by the caller.
double element(const unsigned char* src, char kind, int size, bool swap) {
  switch (kind) {
    case 'f':
      return size == 8 ? load<double>(src, swap) : static_cast<double>(load<float>(src, swap));
    case 'i':
      switch (size) {
        case 1: return static_cast<double>(static_cast<std::int8_t>(src[0]));
        case 2: return static_cast<double>(load<std::int16_t>(src, swap));
        case 4: return static_cast<double>(load<std::int32_t>(src, swap));
        default: return static_cast<double>(load<std::int64_t>(src, swap));
      }
    case 'u':
      switch (size) {
        case 1: return static_cast<double>(src[0]);
        case 2: return static_cast<double>(load<std::uint16_t>(src, swap));
        case 4: return static_cast<double>(load<std::uint32_t>(src, swap));
        default: return static_cast<double>(load<std::uint64_t>(src, swap));
      }
    default:  // 'b': bool, one byte
      return src[0] != 0 ? 1.0 : 0.0;
  }
}

bool allowed_dtype(char kind, int size) {
  switch (kind) {
    case 'f': return size == 4 || size == 8;
    case 'i': case 'u': return size == 1 || size == 2 || size == 4 || size == 8;
    case 'b': return size == 1;
    default: return false;
  }
}

Array read_ndarray(const msgpack::object_ext& ext) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(ext.data());
  const std::size_t size = ext.size;
  auto need = [size](std::size_t n) {
    if (n > size) throw ProtocolError("malformed ndarray extension: payload too short");
  };
  Array array;
  need(1);
  const std::size_t dtype_length = bytes[0];
  need(1 + dtype_length + 1);
  array.dtype.assign(reinterpret_cast<const char*>(bytes + 1), dtype_length);
  const std::size_t ndim = bytes[1 + dtype_length];
  std::size_t pos = 2 + dtype_length;
  need(pos + 8 * ndim);
  std::uint64_t count = 1;
  for (std::size_t d = 0; d < ndim; ++d, pos += 8) {
    const std::uint64_t dim = load<std::uint64_t>(bytes + pos, !little_endian_host());
    if (dim != 0 && count > size / dim) throw ProtocolError("ndarray shape larger than its payload");
    array.shape.push_back(dim);
    count *= dim;
  }
  if (array.dtype.size() < 3 || std::string_view("<>|=").find(array.dtype[0]) == std::string_view::npos) {
    throw ProtocolError("malformed ndarray dtype '" + array.dtype + "'");
  }
  const char kind = array.dtype[1];
  int item = 0;
  const auto parsed = std::from_chars(array.dtype.data() + 2, array.dtype.data() + array.dtype.size(), item);
  if (parsed.ec != std::errc() || parsed.ptr != array.dtype.data() + array.dtype.size() || !allowed_dtype(kind, item)) {
    throw ProtocolError("ndarray dtype '" + array.dtype + "' is not a number type");
  }
  if (count * static_cast<std::uint64_t>(item) != size - pos) {
    throw ProtocolError("ndarray payload size does not match its shape and dtype " + array.dtype);
  }
  const char order = array.dtype[0];
  const bool swap = (order == '<' && !little_endian_host()) || (order == '>' && little_endian_host());
  array.values.resize(count);
  for (std::uint64_t i = 0; i < count; ++i) array.values[i] = element(bytes + pos + i * item, kind, item, swap);
  return array;
}

// Nested msgpack arrays: the shape from the first element at each depth, then every element checked against it.
void flatten(const msgpack::object& value, std::size_t depth, Array& array) {
  if (depth == array.shape.size()) {
    array.values.push_back(as_number(value));
    return;
  }
  if (value.type != msgpack::type::ARRAY || value.via.array.size != array.shape[depth]) {
    throw ProtocolError("nested arrays of unequal lengths");
  }
  for (std::uint32_t i = 0; i < value.via.array.size; ++i) flatten(value.via.array.ptr[i], depth + 1, array);
}

void append_number(std::string& out, double value) {
  if (!std::isfinite(value)) {
    out += "null";
    return;
  }
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);  // shortest text that reads back
  out.append(buffer, result.ptr);
}

void append_string(std::string& out, const char* data, std::size_t size) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < size; ++i) {
    const auto c = static_cast<unsigned char>(data[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void append_base64(std::string& out, const char* data, std::size_t size) {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out += '"';
  for (std::size_t i = 0; i < size; i += 3) {
    std::uint32_t chunk = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < size) chunk |= static_cast<unsigned char>(data[i + 1]) << 8;
    if (i + 2 < size) chunk |= static_cast<unsigned char>(data[i + 2]);
    out += alphabet[(chunk >> 18) & 63];
    out += alphabet[(chunk >> 12) & 63];
    out += i + 1 < size ? alphabet[(chunk >> 6) & 63] : '=';
    out += i + 2 < size ? alphabet[chunk & 63] : '=';
  }
  out += '"';
}

void append_array(std::string& out, const Array& array, std::size_t depth, std::size_t& next) {
  if (depth == array.shape.size()) {
    append_number(out, array.values[next++]);
    return;
  }
  out += '[';
  for (std::uint64_t i = 0; i < array.shape[depth]; ++i) {
    if (i) out += ',';
    append_array(out, array, depth + 1, next);
  }
  out += ']';
}

void append_json(std::string& out, const msgpack::object& value) {
  switch (value.type) {
    case msgpack::type::NIL: out += "null"; break;
    case msgpack::type::BOOLEAN: out += value.via.boolean ? "true" : "false"; break;
    case msgpack::type::POSITIVE_INTEGER: out += std::to_string(value.via.u64); break;
    case msgpack::type::NEGATIVE_INTEGER: out += std::to_string(value.via.i64); break;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: append_number(out, value.via.f64); break;
    case msgpack::type::STR: append_string(out, value.via.str.ptr, value.via.str.size); break;
    case msgpack::type::BIN: append_base64(out, value.via.bin.ptr, value.via.bin.size); break;
    case msgpack::type::ARRAY:
      out += '[';
      for (std::uint32_t i = 0; i < value.via.array.size; ++i) {
        if (i) out += ',';
        append_json(out, value.via.array.ptr[i]);
      }
      out += ']';
      break;
    case msgpack::type::MAP:
      out += '{';
      for (std::uint32_t i = 0; i < value.via.map.size; ++i) {
        const auto& entry = value.via.map.ptr[i];
        if (i) out += ',';
        if (entry.key.type == msgpack::type::STR) {
          append_string(out, entry.key.via.str.ptr, entry.key.via.str.size);
        } else {
          const std::string key = to_json(entry.key);
          append_string(out, key.data(), key.size());
        }
        out += ':';
        append_json(out, entry.val);
      }
      out += '}';
      break;
    case msgpack::type::EXT:
      if (value.via.ext.type() == kNdarrayExt) {
        const Array array = read_ndarray(value.via.ext);
        std::size_t next = 0;
        append_array(out, array, 0, next);
      } else {
        out += "null";  // an extension type ml-processing never sends
      }
      break;
  }
}

}  // namespace

ServiceError::ServiceError(std::string code, std::string message, std::string field)
    : std::runtime_error(code + ": " + message), code_(std::move(code)), message_(std::move(message)),
      field_(std::move(field)) {}

Args& Args::add_matrix(std::string_view key, const std::vector<double>& values, std::size_t rows,
                       std::size_t columns) {
  if (values.size() != rows * columns) throw std::invalid_argument("add_matrix: values.size() != rows * columns");
  std::string header("\x03<f8\x02", 5);
  for (const std::uint64_t dim : {static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(columns)}) {
    for (int byte = 0; byte < 8; ++byte) header += static_cast<char>((dim >> (8 * byte)) & 0xff);
  }
  const std::size_t data_size = values.size() * sizeof(double);
  packer_.pack(key);
  packer_.pack_ext(header.size() + data_size, kNdarrayExt);
  entries_.write(header.data(), header.size());  // the extension's body, written straight after its header
  if (little_endian_host()) {
    entries_.write(reinterpret_cast<const char*>(values.data()), data_size);
  } else {
    for (const double value : values) {
      char bytes[sizeof(double)];
      std::memcpy(bytes, &value, sizeof bytes);
      std::reverse(bytes, bytes + sizeof bytes);
      entries_.write(bytes, sizeof bytes);
    }
  }
  ++count_;
  return *this;
}

Args& Args::add_packed(std::string_view key, const std::function<void(Packer&)>& pack_value) {
  packer_.pack(key);
  pack_value(packer_);
  ++count_;
  return *this;
}

std::string encode_request(std::string_view op, const Args& args, std::string_view rid) {
  msgpack::sbuffer body(32 + op.size() + args.entries().size());
  Packer packer(body);
  packer.pack_map(rid.empty() ? 2 : 3);
  packer.pack(std::string_view("op"));
  packer.pack(op);
  packer.pack(std::string_view("args"));
  packer.pack_map(args.count());
  body.write(args.entries().data(), args.entries().size());
  if (!rid.empty()) {
    packer.pack(std::string_view("id"));
    packer.pack(rid);
  }
  return std::string(body.data(), body.size());
}

Decoded decode(const void* data, std::size_t size) {
  msgpack::object_handle handle;
  std::size_t offset = 0;
  try {
    msgpack::unpack(handle, static_cast<const char*>(data), size, offset);
  } catch (const std::exception& error) {
    throw ProtocolError(std::string("body is not valid msgpack: ") + error.what());
  }
  if (offset != size) throw ProtocolError("body holds more than one msgpack object");
  const msgpack::object root = handle.get();
  return Decoded(std::move(handle), root);
}

Decoded decode_reply(const void* data, std::size_t size) {
  Decoded body = decode(data, size);
  const msgpack::object& root = body.get();
  const msgpack::object* ok = find(root, "ok");
  if (ok == nullptr || ok->type != msgpack::type::BOOLEAN) throw ProtocolError("reply without an 'ok' flag");
  if (!ok->via.boolean) {
    const msgpack::object* error = find(root, "error");
    if (error == nullptr || error->type != msgpack::type::MAP) throw ProtocolError("error reply without 'error' map");
    const msgpack::object* field = find(*error, "field");
    throw ServiceError(read_string(*error, "code"), read_string(*error, "message"),
                       field != nullptr && field->type == msgpack::type::STR ? field->as<std::string>() : "");
  }
  const msgpack::object* result = find(root, "result");
  static const msgpack::object nil;  // a reply without a result: null
  return std::move(body).focus(result != nullptr ? *result : nil);
}

const msgpack::object* find(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& entry = map.via.map.ptr[i];
    if (entry.key.type == msgpack::type::STR && std::string_view(entry.key.via.str.ptr, entry.key.via.str.size) == key) {
      return &entry.val;
    }
  }
  return nullptr;
}

namespace {
const msgpack::object& entry(const msgpack::object& map, std::string_view key) {
  const msgpack::object* value = find(map, key);
  if (value == nullptr) throw ProtocolError("missing '" + std::string(key) + "'");
  return *value;
}
}  // namespace

std::string read_string(const msgpack::object& map, std::string_view key) {
  const msgpack::object& value = entry(map, key);
  if (value.type != msgpack::type::STR) throw ProtocolError("'" + std::string(key) + "' is not a string");
  return std::string(value.via.str.ptr, value.via.str.size);
}

std::int64_t read_int(const msgpack::object& map, std::string_view key) {
  const msgpack::object& value = entry(map, key);
  if (value.type == msgpack::type::POSITIVE_INTEGER && value.via.u64 <= std::numeric_limits<std::int64_t>::max()) {
    return static_cast<std::int64_t>(value.via.u64);
  }
  if (value.type == msgpack::type::NEGATIVE_INTEGER) return value.via.i64;
  throw ProtocolError("'" + std::string(key) + "' is not an integer");
}

double read_number(const msgpack::object& map, std::string_view key) {
  try {
    return as_number(entry(map, key));
  } catch (const ProtocolError&) {
    throw ProtocolError("'" + std::string(key) + "' is not a number");
  }
}

bool read_bool(const msgpack::object& map, std::string_view key) {
  const msgpack::object& value = entry(map, key);
  if (value.type != msgpack::type::BOOLEAN) throw ProtocolError("'" + std::string(key) + "' is not a boolean");
  return value.via.boolean;
}

double as_number(const msgpack::object& value) {
  switch (value.type) {
    case msgpack::type::POSITIVE_INTEGER: return static_cast<double>(value.via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return static_cast<double>(value.via.i64);
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return value.via.f64;
    case msgpack::type::NIL: return std::numeric_limits<double>::quiet_NaN();
    case msgpack::type::BOOLEAN: return value.via.boolean ? 1.0 : 0.0;
    default: throw ProtocolError("expected a number");
  }
}

Array read_array(const msgpack::object& value) {
  if (value.type == msgpack::type::EXT) {
    if (value.via.ext.type() != kNdarrayExt) throw ProtocolError("unknown msgpack extension type");
    return read_ndarray(value.via.ext);
  }
  Array array;
  array.dtype = "list";
  for (const msgpack::object* level = &value; level->type == msgpack::type::ARRAY;) {
    array.shape.push_back(level->via.array.size);
    if (level->via.array.size == 0) break;
    level = &level->via.array.ptr[0];
  }
  flatten(value, 0, array);
  return array;
}

std::string to_json(const msgpack::object& value) {
  std::string out;
  append_json(out, value);
  return out;
}

std::string json_number(double value) {
  std::string out;
  append_number(out, value);
  return out;
}

std::string json_string(std::string_view text) {
  std::string out;
  append_string(out, text.data(), text.size());
  return out;
}

}  // namespace mlp
