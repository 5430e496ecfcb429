// Sockets: the MDP/0.2 client, the pub/sub publisher and subscriber, CURVE keys, topic strings.
#include "mlp/client.hpp"

#include <array>
#include <cmath>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>

#include <zmq_addon.hpp>

namespace mlp {

namespace {

// MDP/0.2 client frames (RFC 18; docs/PROTOCOL.md section 1.1).
constexpr std::string_view kClientHeader = "MDPC02";
constexpr std::string_view kRequest = "\x01";
constexpr std::string_view kFinal = "\x03";
constexpr std::string_view kMmiService = "mmi.service";

std::string_view view(const zmq::message_t& frame) { return {frame.data<char>(), frame.size()}; }

// The string value of "key" in a flat JSON object; Z85 keys hold neither quotes nor backslashes.
std::string json_string(const std::string& text, const std::string& key, const std::string& path) {
  const std::size_t name = text.find('"' + key + '"');
  const std::size_t colon = name == std::string::npos ? name : text.find(':', name + key.size() + 2);
  const std::size_t open = colon == std::string::npos ? colon : text.find('"', colon + 1);
  const std::size_t close = open == std::string::npos ? open : text.find('"', open + 1);
  if (close == std::string::npos) throw std::runtime_error(path + ": no string \"" + key + "\"");
  return text.substr(open + 1, close - open - 1);
}

// A list of numbers under `key` ([] when missing, null, or not all numbers: see `result` then).
std::vector<double> numbers_or_empty(const msgpack::object& map, std::string_view key) {
  const msgpack::object* value = find(map, key);
  if (value == nullptr || value->type == msgpack::type::NIL) return {};
  try {
    return read_array(*value).values;
  } catch (const ProtocolError&) {
    return {};
  }
}

Array array_or_empty(const msgpack::object& map, std::string_view key) {
  const msgpack::object* value = find(map, key);
  return value == nullptr || value->type == msgpack::type::NIL ? Array() : read_array(*value);
}

}  // namespace

CurveKeys CurveKeys::load(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error(path + ": cannot read the key file");
  std::stringstream text;
  text << file.rdbuf();
  return {json_string(text.str(), "server", path), json_string(text.str(), "public", path),
          json_string(text.str(), "secret", path)};
}

void CurveKeys::apply(zmq::socket_t& socket) const {
  for (const std::string* key : {&server, &public_key, &secret_key}) {
    if (key->size() != 40) throw std::invalid_argument("a CURVE key is 40 characters of Z85");
  }
  socket.set(zmq::sockopt::curve_serverkey, server);
  socket.set(zmq::sockopt::curve_publickey, public_key);
  socket.set(zmq::sockopt::curve_secretkey, secret_key);
}

Client::Client(zmq::context_t& context, std::string broker, Options options)
    : context_(context), broker_(std::move(broker)), options_(std::move(options)), socket_(connect()) {}

zmq::socket_t Client::connect() {
  zmq::socket_t socket(context_, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::rcvtimeo, static_cast<int>(options_.timeout.count()));
  socket.set(zmq::sockopt::sndtimeo, static_cast<int>(options_.timeout.count()));
  if (options_.keys) options_.keys->apply(socket);
  socket.connect(broker_);
  return socket;
}

std::string Client::request_raw(const std::string& service, std::string_view body) {
  const std::array<zmq::const_buffer, 4> request = {zmq::buffer(kClientHeader), zmq::buffer(kRequest),
                                                    zmq::buffer(service), zmq::buffer(body)};
  std::vector<zmq::message_t> reply;
  if (!zmq::send_multipart(socket_, request) || !zmq::recv_multipart(socket_, std::back_inserter(reply))) {
    socket_ = connect();  // a late reply must never answer the next request
    throw TimeoutError("no reply from service '" + service + "' within " +
                       std::to_string(options_.timeout.count()) + " ms");
  }
  if (reply.size() != 4 || view(reply[0]) != kClientHeader || view(reply[1]) != kFinal) {
    throw ProtocolError("malformed MDP reply (" + std::to_string(reply.size()) + " frames)");
  }
  if (view(reply[2]) != service) throw ProtocolError("reply for service '" + reply[2].to_string() + "'");
  return reply[3].to_string();
}

Decoded Client::request(const std::string& service, std::string_view op, const Args& args, std::string_view rid) {
  const std::string reply = request_raw(service, encode_request(op, args, rid));
  return decode_reply(reply.data(), reply.size());
}

bool Client::has_service(const std::string& service) {
  return request_raw(std::string(kMmiService), service) == "200";
}

std::string Client::ping() {
  const Decoded result = request("kernel", "ping");
  if (result.get().type != msgpack::type::STR) throw ProtocolError("ping answered something else than a string");
  return result.get().as<std::string>();
}

Prediction Client::predict(const std::string& model, const std::vector<double>& features,
                           std::optional<std::int64_t> version) {
  Args args;
  args.add("model", model).add("features", features);
  if (version) args.add("version", *version);
  Prediction out;
  out.result = request("models", "predict", args);
  const msgpack::object& reply = out.result.get();
  out.model = read_string(reply, "model");
  out.version = read_int(reply, "version");
  const msgpack::object* prediction = find(reply, "prediction");
  try {
    out.prediction = prediction == nullptr ? std::nan("") : as_number(*prediction);
  } catch (const ProtocolError&) {  // a label that is not a number: read it from `result`
    out.prediction = std::nan("");
  }
  out.probabilities = numbers_or_empty(reply, "probabilities");
  out.classes = numbers_or_empty(reply, "classes");
  out.path = read_string(reply, "path");
  out.latency_us = read_number(reply, "latency_us");
  out.cached = read_bool(reply, "cached");
  return out;
}

BatchPrediction Client::predict_batch(const std::string& model, const std::vector<double>& rows, std::size_t columns,
                                      std::optional<std::int64_t> version) {
  if (columns == 0 || rows.size() % columns != 0) {
    throw std::invalid_argument("predict_batch: rows.size() must be a multiple of columns");
  }
  Args args;
  args.add("model", model).add_matrix("rows", rows, rows.size() / columns, columns);
  if (version) args.add("version", *version);
  BatchPrediction out;
  out.result = request("models", "predict_batch", args);
  const msgpack::object& reply = out.result.get();
  out.model = read_string(reply, "model");
  out.version = read_int(reply, "version");
  out.rows = read_int(reply, "rows");
  out.predictions = array_or_empty(reply, "predictions");
  out.probabilities = array_or_empty(reply, "probabilities");
  out.classes = numbers_or_empty(reply, "classes");
  out.path = read_string(reply, "path");
  out.latency_us = read_number(reply, "latency_us");
  return out;
}

Publisher::Publisher(zmq::context_t& context, const std::string& endpoint, const std::optional<CurveKeys>& keys,
                     bool lossless)
    : socket_(context, zmq::socket_type::pub) {
  socket_.set(zmq::sockopt::linger, 1000);  // what was published leaves before the socket closes, within 1 s
  if (lossless) socket_.set(zmq::sockopt::sndhwm, 0);
  if (keys) keys->apply(socket_);
  socket_.connect(endpoint);
}

void Publisher::publish(std::string_view topic, const msgpack::sbuffer& body) {
  const std::array<zmq::const_buffer, 2> message = {zmq::buffer(topic), zmq::buffer(body.data(), body.size())};
  zmq::send_multipart(socket_, message);
}

void Publisher::publish_bar(std::string_view symbol, std::string_view timeframe, const Bar& bar) {
  msgpack::sbuffer body(96);
  Packer packer(body);
  packer.pack_map(7);
  packer.pack(std::string_view("ts")).pack(bar.ts);
  packer.pack(std::string_view("open")).pack(bar.open);
  packer.pack(std::string_view("high")).pack(bar.high);
  packer.pack(std::string_view("low")).pack(bar.low);
  packer.pack(std::string_view("close")).pack(bar.close);
  packer.pack(std::string_view("volume")).pack(bar.volume);
  packer.pack(std::string_view("final")).pack(bar.final);
  publish(topics::bar(symbol, timeframe), body);
}

Subscriber::Subscriber(zmq::context_t& context, const std::string& endpoint, const std::optional<CurveKeys>& keys)
    : socket_(context, zmq::socket_type::sub) {
  socket_.set(zmq::sockopt::linger, 0);
  if (keys) keys->apply(socket_);
  socket_.connect(endpoint);
}

void Subscriber::subscribe(std::string_view prefix) { socket_.set(zmq::sockopt::subscribe, prefix); }

void Subscriber::unsubscribe(std::string_view prefix) { socket_.set(zmq::sockopt::unsubscribe, prefix); }

std::optional<Message> Subscriber::receive(std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
  std::vector<zmq::message_t> frames;
  if (!zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return std::nullopt;
  if (frames.size() != 2) throw ProtocolError("a pub/sub message is two frames, got " + std::to_string(frames.size()));
  return Message{frames[0].to_string(), decode(frames[1].data(), frames[1].size())};
}

void wait_connected(Publisher& publisher, Subscriber& subscriber, std::chrono::milliseconds timeout) {
  std::random_device random;
  std::ostringstream name;
  name << "kernel.feedprobe-" << std::hex << random();  // a kernel event no service consumes
  const std::string topic = name.str();
  subscriber.subscribe(topic);  // made last: its probe arriving proves the earlier subscriptions arrived too
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  msgpack::sbuffer probe;
  msgpack::pack(probe, std::map<std::string, int>{{"probe", 0}});
  bool arrived = false;
  while (!arrived && std::chrono::steady_clock::now() < deadline) {
    publisher.publish(topic, probe);
    while (auto message = subscriber.receive(std::chrono::milliseconds(20))) {  // others before it are dropped
      if (message->topic == topic) {
        arrived = true;
        break;
      }
    }
  }
  subscriber.unsubscribe(topic);
  if (!arrived) throw TimeoutError("no probe came back through the service's pub/sub within the timeout");
}

namespace topics {

std::string bar(std::string_view symbol, std::string_view timeframe) {
  return "bar." + std::string(symbol) + "." + std::string(timeframe);
}
std::string prediction(std::string_view symbol) { return "prediction." + std::string(symbol); }
std::string signal(std::string_view symbol) { return "signal." + std::string(symbol); }
std::string indicator(std::string_view symbol, std::string_view timeframe) {
  return "indicator." + std::string(symbol) + "." + std::string(timeframe);
}
std::string prefix(std::string_view kind, std::string_view symbol) {
  return std::string(kind) + (symbol.empty() ? "" : "." + std::string(symbol)) + ".";
}

}  // namespace topics

}  // namespace mlp
