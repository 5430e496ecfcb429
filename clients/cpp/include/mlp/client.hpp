// An ml-processing client in C++: MDP/0.2 requests (docs/PROTOCOL.md section 1), pub/sub (section 4) and
// CURVE keys (section 7), over libzmq through cppzmq. Bodies are built and read by codec.hpp.
//
//   zmq::context_t ctx;
//   mlp::Client client(ctx, "tcp://127.0.0.1:5555");
//   client.ping();                                          // "pong"
//   mlp::Prediction p = client.predict("ensemble", {1.2, 0.8, -0.3, 2.1});
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "mlp/codec.hpp"

namespace mlp {

// A CURVE client's keys, Z85 text of 40 characters each, as `ml-processing keys client NAME --out FILE` writes
// them: the service's public key, and the client's own pair.
struct CurveKeys {
  std::string server;
  std::string public_key;
  std::string secret_key;

  // The JSON key file {"server": ..., "public": ..., "secret": ...}; std::runtime_error when unreadable.
  static CurveKeys load(const std::string& path);
  // Make `socket` a CURVE client of the service; call before connect.
  void apply(zmq::socket_t& socket) const;
};

struct Options {
  std::chrono::milliseconds timeout{5000};  // per request; past it, TimeoutError and a fresh socket
  std::optional<CurveKeys> keys;            // set when the service runs with [security] auth = true
};

// A model's answer for one row (service `models`, op `predict`).
struct Prediction {
  std::string model;
  std::int64_t version = 0;
  double prediction = 0;              // the class label or the regression value, when it is a number
  std::vector<double> probabilities;  // in the order of `classes`; empty for a regressor
  std::vector<double> classes;        // numeric class labels; empty for a regressor
  std::string path;                   // onnx, native, or both (an ensemble)
  double latency_us = 0;              // the service's own time for the request
  bool cached = false;
  Decoded result;                     // the whole result, for labels that are not numbers and later fields
};

// A model's answers for many rows (op `predict_batch`).
struct BatchPrediction {
  std::string model;
  std::int64_t version = 0;
  std::int64_t rows = 0;
  Array predictions;    // shape {rows}
  Array probabilities;  // shape {rows, classes}; empty for a regressor
  std::vector<double> classes;
  std::string path;
  double latency_us = 0;
  Decoded result;
};

// One request at a time on one DEALER socket (MDP replies carry no correlation id). Not thread-safe: use one
// Client per thread.
class Client {
 public:
  Client(zmq::context_t& context, std::string broker, Options options = {});

  // One request; the reply's `result`. Throws ServiceError, TimeoutError or ProtocolError.
  Decoded request(const std::string& service, std::string_view op, const Args& args = Args(),
                  std::string_view rid = {});
  // One body frame out, the reply's body frame back.
  std::string request_raw(const std::string& service, std::string_view body);
  // MMI (RFC 8): does the broker know `service`?
  bool has_service(const std::string& service);

  std::string ping();  // service `kernel`, op `ping`: "pong"
  Prediction predict(const std::string& model, const std::vector<double>& features,
                     std::optional<std::int64_t> version = std::nullopt);
  // `rows` row-major, `columns` wide; sent as one float64 ndarray.
  BatchPrediction predict_batch(const std::string& model, const std::vector<double>& rows, std::size_t columns,
                                std::optional<std::int64_t> version = std::nullopt);

 private:
  zmq::socket_t connect();

  zmq::context_t& context_;
  std::string broker_;
  Options options_;
  zmq::socket_t socket_;
};

// A bar as the service reads it on `bar.SYMBOL.TIMEFRAME`: ts is the bar's open time in epoch milliseconds.
struct Bar {
  std::int64_t ts = 0;
  double open = 0, high = 0, low = 0, close = 0, volume = 0;
  bool final = true;  // false for a still-forming bar
};

// Publishes to the service's pub/sub input (`[bus] pub_in`). Publishing needs the `compute` role with auth on.
class Publisher {
 public:
  // `lossless`: never drop on a full queue (ZMQ_SNDHWM 0); the caller then paces itself.
  Publisher(zmq::context_t& context, const std::string& endpoint, const std::optional<CurveKeys>& keys = {},
            bool lossless = false);
  void publish(std::string_view topic, const msgpack::sbuffer& body);
  void publish_bar(std::string_view symbol, std::string_view timeframe, const Bar& bar);
  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::socket_t socket_;
};

struct Message {
  std::string topic;
  Decoded body;
};

// Subscribes to the service's pub/sub output (`[bus] pub_out`). Subscribing needs the `read` role with auth on.
class Subscriber {
 public:
  Subscriber(zmq::context_t& context, const std::string& endpoint, const std::optional<CurveKeys>& keys = {});
  void subscribe(std::string_view prefix);  // a byte prefix of topics (see topics::prefix)
  void unsubscribe(std::string_view prefix);
  // The next message, or nothing within `timeout`. ProtocolError for a message that is not [topic, body].
  std::optional<Message> receive(std::chrono::milliseconds timeout);
  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::socket_t socket_;
};

// Returns once a probe published on `publisher` came back on `subscriber` through the service, so messages
// published from now on reach subscriptions made before (ZeroMQ subscriptions take time to propagate).
// TimeoutError past `timeout`.
void wait_connected(Publisher& publisher, Subscriber& subscriber, std::chrono::milliseconds timeout);

// Topic strings (docs/PROTOCOL.md section 4): `kind.SYMBOL[.TIMEFRAME]`; symbols never contain dots.
namespace topics {
std::string bar(std::string_view symbol, std::string_view timeframe);        // in
std::string prediction(std::string_view symbol);                             // out
std::string signal(std::string_view symbol);                                 // out
std::string indicator(std::string_view symbol, std::string_view timeframe);  // out
// A subscription prefix: `kind.` or `kind.SYMBOL.` (so `bar.AAPL.` never matches `bar.AAPLX.1m`).
std::string prefix(std::string_view kind, std::string_view symbol = {});
}  // namespace topics

}  // namespace mlp
