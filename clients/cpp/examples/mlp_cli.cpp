// mlp-cli: the C++ client from a shell. Every command prints JSON on stdout (one object per line).
//
//   mlp-cli ping
//   mlp-cli predict MODEL 1.2,0.8,-0.3,2.1
//   mlp-cli batch MODEL --rows-file rows.csv
//   mlp-cli live SYMBOL TIMEFRAME --bars-file bars.csv --count N
//   mlp-cli latency MODEL --rows-file rows.csv --count 20000 --warmup 1000 --max-seconds 20
//   mlp-cli json < body.msgpack
//
// Exit status: 0 done, 1 usage, 2 the service answered an error, 3 timeout, 4 any other failure.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "mlp/client.hpp"

namespace {

using Clock = std::chrono::steady_clock;

const char* const kUsage = R"(usage: mlp-cli [options] COMMAND ...
commands:
  ping                                      service kernel, op ping
  predict MODEL X1,X2,...                   one row (service models, op predict)
  batch MODEL --rows-file FILE              rows of a CSV file as one ndarray (op predict_batch)
  live SYMBOL TIMEFRAME --bars-file FILE    subscribe to prediction.SYMBOL, publish the bars of FILE
       [--count N]                          (ts,open,high,low,close,volume per line), print N predictions
                                            (without --count: until --timeout-ms passes without one)
  latency MODEL (X1,X2,... | --rows-file FILE) [--count N] [--warmup N] [--max-seconds S]
                                            one-row predict round trips; p50/p99 in microseconds
  json                                      one msgpack body on stdin as JSON (ndarrays as nested arrays)
options:
  --broker ENDPOINT      MDP broker (tcp://127.0.0.1:5555)
  --pub-in ENDPOINT      pub/sub input (tcp://127.0.0.1:5556)
  --pub-out ENDPOINT     pub/sub output (tcp://127.0.0.1:5557)
  --timeout-ms MS        per request and per wait (5000)
  --keys FILE            CURVE key file as `ml-processing keys client NAME --out FILE` writes it
  --server-key K --public-key K --secret-key K    the same keys given one by one
)";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// `--name value` options anywhere on the line; everything else is positional.
struct Command {
  std::vector<std::string> words;
  std::map<std::string, std::string> options;

  std::string option(const std::string& name, const std::string& fallback) const {
    const auto found = options.find(name);
    return found == options.end() ? fallback : found->second;
  }
  double number(const std::string& name, double fallback) const {
    const auto found = options.find(name);
    if (found == options.end()) return fallback;
    char* end = nullptr;
    const double value = std::strtod(found->second.c_str(), &end);
    if (end == found->second.c_str() || *end != '\0') throw UsageError("--" + name + " takes a number");
    return value;
  }
  const std::string& required(const std::string& name) const {
    const auto found = options.find(name);
    if (found == options.end()) throw UsageError("missing --" + name);
    return found->second;
  }
  const std::string& word(std::size_t index, const char* what) const {
    if (index >= words.size()) throw UsageError(std::string("missing ") + what);
    return words[index];
  }
};

Command parse(int argc, char** argv) {
  Command command;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0) {
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      command.options[arg.substr(2)] = argv[++i];
    } else {
      command.words.push_back(arg);
    }
  }
  return command;
}

std::vector<double> parse_row(const std::string& text) {
  std::vector<double> row;
  std::stringstream cells(text);
  for (std::string cell; std::getline(cells, cell, ',');) {
    char* end = nullptr;
    row.push_back(std::strtod(cell.c_str(), &end));
    if (end == cell.c_str()) throw UsageError("not a number: '" + cell + "'");
  }
  return row;
}

// Rows of numbers, one per line; every row as wide as the first.
std::vector<std::vector<double>> read_csv(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw UsageError("cannot read " + path);
  std::vector<std::vector<double>> rows;
  for (std::string line; std::getline(file, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    rows.push_back(parse_row(line));
    if (rows.back().size() != rows.front().size()) throw UsageError(path + ": rows of unequal widths");
  }
  if (rows.empty()) throw UsageError(path + ": no rows");
  return rows;
}

std::string json_numbers(const std::vector<double>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + mlp::json_number(values[i]);
  return out + "]";
}

std::string json_rows(const mlp::Array& matrix) {
  if (matrix.shape.size() != 2) return json_numbers(matrix.values);
  std::string out = "[";
  for (std::size_t r = 0; r < matrix.shape[0]; ++r) {
    const auto first = matrix.values.begin() + static_cast<std::ptrdiff_t>(r * matrix.shape[1]);
    out += (r ? "," : "") + json_numbers(std::vector<double>(first, first + static_cast<std::ptrdiff_t>(matrix.shape[1])));
  }
  return out + "]";
}

// Nearest-rank percentile of sorted values (as bench/_common.py computes it).
double percentile(const std::vector<double>& sorted, double q) {
  const auto rank = static_cast<std::size_t>(std::ceil(q / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

std::optional<mlp::CurveKeys> keys_from(const Command& command) {
  if (command.options.count("keys")) return mlp::CurveKeys::load(command.option("keys", ""));
  if (command.options.count("server-key")) {
    return mlp::CurveKeys{command.option("server-key", ""), command.option("public-key", ""),
                          command.option("secret-key", "")};
  }
  return std::nullopt;
}

int ping(mlp::Client& client) {
  const auto start = Clock::now();
  const std::string answer = client.ping();
  const double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  std::cout << "{\"result\":" << mlp::json_string(answer) << ",\"round_trip_us\":" << mlp::json_number(us) << "}\n";
  return 0;
}

int predict(mlp::Client& client, const Command& command) {
  const mlp::Prediction p = client.predict(command.word(1, "MODEL"), parse_row(command.word(2, "X1,X2,...")));
  const msgpack::object* label = mlp::find(p.result.get(), "prediction");  // any type: a number or a class name
  if (label == nullptr) throw mlp::ProtocolError("a prediction without 'prediction'");
  std::cout << "{\"model\":" << mlp::json_string(p.model) << ",\"version\":" << p.version
            << ",\"prediction\":" << mlp::to_json(*label)
            << ",\"probabilities\":" << json_numbers(p.probabilities) << ",\"classes\":" << json_numbers(p.classes)
            << ",\"path\":" << mlp::json_string(p.path) << ",\"latency_us\":" << mlp::json_number(p.latency_us)
            << ",\"cached\":" << (p.cached ? "true" : "false") << "}\n";
  return 0;
}

int batch(mlp::Client& client, const Command& command) {
  const auto rows = read_csv(command.required("rows-file"));
  std::vector<double> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  const mlp::BatchPrediction b = client.predict_batch(command.word(1, "MODEL"), flat, rows.front().size());
  std::cout << "{\"model\":" << mlp::json_string(b.model) << ",\"version\":" << b.version << ",\"rows\":" << b.rows
            << ",\"predictions\":" << json_numbers(b.predictions.values)
            << ",\"probabilities\":" << json_rows(b.probabilities) << ",\"classes\":" << json_numbers(b.classes)
            << ",\"path\":" << mlp::json_string(b.path) << ",\"latency_us\":" << mlp::json_number(b.latency_us)
            << "}\n";
  return 0;
}

int live(zmq::context_t& context, const Command& command, const std::optional<mlp::CurveKeys>& keys,
         std::chrono::milliseconds timeout) {
  const std::string& symbol = command.word(1, "SYMBOL");
  const std::string& timeframe = command.word(2, "TIMEFRAME");
  const auto bars = read_csv(command.required("bars-file"));
  const bool counted = command.options.count("count") != 0;  // without --count: until `timeout` of silence
  const auto count = static_cast<std::size_t>(command.number("count", 0));
  mlp::Subscriber subscriber(context, command.option("pub-out", "tcp://127.0.0.1:5557"), keys);
  mlp::Publisher publisher(context, command.option("pub-in", "tcp://127.0.0.1:5556"), keys, true);
  const std::string topic = mlp::topics::prediction(symbol);
  subscriber.subscribe(topic);  // also matches prediction.SYMBOLX...: the topic is checked below
  mlp::wait_connected(publisher, subscriber, timeout);
  for (const auto& bar : bars) {
    if (bar.size() != 6) throw UsageError("a bar is ts,open,high,low,close,volume");
    publisher.publish_bar(symbol, timeframe,
                          {static_cast<std::int64_t>(bar[0]), bar[1], bar[2], bar[3], bar[4], bar[5], true});
  }
  std::size_t received = 0;
  while (!counted || received < count) {
    auto message = subscriber.receive(timeout);  // the time allowed between two predictions
    if (!message && !counted) break;
    if (!message) throw mlp::TimeoutError("received " + std::to_string(received) + " of " + std::to_string(count) +
                                          " predictions");
    if (message->topic != topic) continue;
    ++received;
    std::cout << "{\"topic\":" << mlp::json_string(message->topic) << ",\"body\":" << mlp::to_json(message->body.get())
              << "}\n";
  }
  return 0;
}

int latency(mlp::Client& client, const Command& command) {
  const std::string& model = command.word(1, "MODEL");
  const auto rows = command.options.count("rows-file") ? read_csv(command.required("rows-file"))
                                                       : std::vector<std::vector<double>>{parse_row(command.word(2, "X1,X2,..."))};
  const auto count = static_cast<std::size_t>(command.number("count", 20000));
  const auto warmup = static_cast<std::size_t>(command.number("warmup", 1000));
  const auto deadline = Clock::now() + std::chrono::duration<double>(command.number("max-seconds", 20));
  for (std::size_t i = 0; i < warmup; ++i) client.predict(model, rows[i % rows.size()]);
  std::vector<double> round_trips_us, service_us;
  round_trips_us.reserve(count);
  service_us.reserve(count);
  for (std::size_t i = 0; i < count && Clock::now() < deadline; ++i) {
    const auto start = Clock::now();
    const mlp::Prediction p = client.predict(model, rows[i % rows.size()]);
    round_trips_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    service_us.push_back(p.latency_us);
  }
  if (round_trips_us.empty()) throw UsageError("no request measured: --count and --max-seconds must be positive");
  std::sort(round_trips_us.begin(), round_trips_us.end());
  std::sort(service_us.begin(), service_us.end());
  const double mean = std::accumulate(round_trips_us.begin(), round_trips_us.end(), 0.0) /
                      static_cast<double>(round_trips_us.size());
  std::cout << "{\"client\":\"cpp\",\"op\":\"predict\",\"model\":" << mlp::json_string(model)
            << ",\"count\":" << round_trips_us.size() << ",\"p50_us\":" << mlp::json_number(percentile(round_trips_us, 50))
            << ",\"p90_us\":" << mlp::json_number(percentile(round_trips_us, 90))
            << ",\"p99_us\":" << mlp::json_number(percentile(round_trips_us, 99))
            << ",\"max_us\":" << mlp::json_number(round_trips_us.back()) << ",\"mean_us\":" << mlp::json_number(mean)
            << ",\"service_p50_us\":" << mlp::json_number(percentile(service_us, 50))
            << ",\"service_p99_us\":" << mlp::json_number(percentile(service_us, 99)) << "}\n";
  return 0;
}

int json(std::istream& input) {
  const std::string body((std::istreambuf_iterator<char>(input)), std::istreambuf_iterator<char>());
  std::cout << mlp::to_json(mlp::decode(body.data(), body.size()).get()) << "\n";
  return 0;
}

int run(const Command& command) {
  const std::string& name = command.word(0, "COMMAND");
  if (name == "json") return json(std::cin);
  const auto timeout = std::chrono::milliseconds(static_cast<long>(command.number("timeout-ms", 5000)));
  const auto keys = keys_from(command);
  zmq::context_t context;
  if (name == "live") return live(context, command, keys, timeout);
  mlp::Client client(context, command.option("broker", "tcp://127.0.0.1:5555"), mlp::Options{timeout, keys});
  if (name == "ping") return ping(client);
  if (name == "predict") return predict(client, command);
  if (name == "batch") return batch(client, command);
  if (name == "latency") return latency(client, command);
  throw UsageError("unknown command '" + name + "'");
}

void print_error(const std::string& code, const std::string& message, const std::string& field = "") {
  std::cout << "{\"error\":{\"code\":" << mlp::json_string(code) << ",\"message\":" << mlp::json_string(message);
  if (!field.empty()) std::cout << ",\"field\":" << mlp::json_string(field);
  std::cout << "}}\n";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const UsageError& error) {
    std::cerr << "mlp-cli: " << error.what() << "\n" << kUsage;
    return 1;
  } catch (const mlp::ServiceError& error) {
    print_error(error.code(), error.message(), error.field());
    return 2;
  } catch (const mlp::TimeoutError& error) {
    print_error("timeout", error.what());
    return 3;
  } catch (const std::exception& error) {
    std::cerr << "mlp-cli: " << error.what() << "\n";
    return 4;
  }
}
