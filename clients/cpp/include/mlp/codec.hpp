// ml-processing bodies in msgpack (docs/PROTOCOL.md sections 2 and 3): requests, replies, the ndarray
// extension type, and a JSON rendering of any decoded body. No sockets here (see client.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <msgpack.hpp>

namespace mlp {

using Packer = msgpack::packer<msgpack::sbuffer>;

// The msgpack extension type code of an ndarray (docs/PROTOCOL.md section 3).
constexpr std::int8_t kNdarrayExt = 1;

// The service answered {"ok": false, "error": {"code", "message", "field"?}}.
class ServiceError : public std::runtime_error {
 public:
  ServiceError(std::string code, std::string message, std::string field);
  const std::string& code() const { return code_; }        // bad_request, not_found, unavailable, ...
  const std::string& message() const { return message_; }
  const std::string& field() const { return field_; }      // the argument to blame, or empty
 private:
  std::string code_, message_, field_;
};

// No reply within the client's timeout (also: a CURVE handshake the service refused).
class TimeoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A reply or message that does not follow the protocol.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The `args` map of a request, built entry by entry:
//   Args().add("model", "m").add("features", std::vector<double>{1, 2, 3})
class Args {
 public:
  Args() = default;
  Args(const Args&) = delete;
  Args& operator=(const Args&) = delete;

  // Any value msgpack-cxx packs: numbers, bool, strings, std::vector, std::map, ...
  template <typename T>
  Args& add(std::string_view key, const T& value) {
    packer_.pack(key);
    packer_.pack(value);
    ++count_;
    return *this;
  }
  Args& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  // A row-major float64 matrix as one ndarray extension: one copy, no number-by-number encoding.
  Args& add_matrix(std::string_view key, const std::vector<double>& values, std::size_t rows, std::size_t columns);
  // A value written by `pack_value` (exactly one msgpack object).
  Args& add_packed(std::string_view key, const std::function<void(Packer&)>& pack_value);

  std::uint32_t count() const { return count_; }
  const msgpack::sbuffer& entries() const { return entries_; }  // the packed key/value pairs

 private:
  msgpack::sbuffer entries_;
  Packer packer_{entries_};
  std::uint32_t count_ = 0;
};

// One request body: {"op": op, "args": args, "id": rid} ("id" only when rid is not empty).
std::string encode_request(std::string_view op, const Args& args, std::string_view rid = {});

// A decoded body that owns its memory; `get()` is the part of interest (a reply's result, a message's body).
class Decoded {
 public:
  Decoded() = default;
  Decoded(msgpack::object_handle handle, const msgpack::object& part) : handle_(std::move(handle)), part_(part) {}
  const msgpack::object& get() const { return part_; }
  // The same memory with `part`, an object inside it, in focus.
  Decoded focus(const msgpack::object& part) && { return Decoded(std::move(handle_), part); }
 private:
  msgpack::object_handle handle_;  // owns the zone that part_ points into (a move keeps the zone in place)
  msgpack::object part_;
};

// Any msgpack frame (a pub/sub body); ProtocolError when it is not valid msgpack.
Decoded decode(const void* data, std::size_t size);
// A reply body: its `result`, or ServiceError for an error reply; ProtocolError when malformed.
Decoded decode_reply(const void* data, std::size_t size);

// The value of `key` in a msgpack map, or nullptr (also when `map` is not a map).
const msgpack::object* find(const msgpack::object& map, std::string_view key);
// Typed reads of map entries: ProtocolError naming the key when it is missing or of another type.
std::string read_string(const msgpack::object& map, std::string_view key);
std::int64_t read_int(const msgpack::object& map, std::string_view key);
double read_number(const msgpack::object& map, std::string_view key);
bool read_bool(const msgpack::object& map, std::string_view key);
double as_number(const msgpack::object& value);  // an int or float (nil reads as NaN); else ProtocolError

// A numeric array read from an ndarray extension or from (nested) msgpack arrays of numbers, as float64.
struct Array {
  std::string dtype;                 // as sent ("<f8", "<i8", ...); "list" for plain msgpack arrays
  std::vector<std::uint64_t> shape;  // {} for a scalar, {n} for a vector, {rows, columns} for a matrix
  std::vector<double> values;        // row-major; nil elements read as NaN

  double at(std::size_t row, std::size_t column) const { return values.at(row * shape.at(1) + column); }
};
Array read_array(const msgpack::object& value);

// JSON text of any decoded body: ndarrays become nested arrays, NaN and infinities null, bin base64.
std::string to_json(const msgpack::object& value);
std::string json_number(double value);         // the shortest text that reads back the same; null if not finite
std::string json_string(std::string_view text);  // quoted and escaped

}  // namespace mlp
