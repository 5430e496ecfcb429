// The smallest program: ping the service, then predict one row with a model.
//   quickstart [BROKER] [MODEL] [X1 X2 ...]
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "mlp/client.hpp"

int main(int argc, char** argv) {
  const std::string broker = argc > 1 ? argv[1] : "tcp://127.0.0.1:5555";
  const std::string model = argc > 2 ? argv[2] : "ensemble";
  std::vector<double> row;
  for (int i = 3; i < argc; ++i) row.push_back(std::atof(argv[i]));
  if (row.empty()) row = {1.2, 0.8, -0.3, 2.1};  // the seed's example row of the default models

  zmq::context_t context;
  mlp::Client client(context, broker);  // mlp::Options{timeout, mlp::CurveKeys::load("engine.key")} with auth on
  try {
    std::cout << "ping: " << client.ping() << "\n";
    const mlp::Prediction p = client.predict(model, row);
    std::cout << p.model << "@" << p.version << ": " << p.prediction;
    for (std::size_t i = 0; i < p.probabilities.size(); ++i) {
      std::cout << (i ? ", " : " (P = ") << p.probabilities[i] << (i + 1 == p.probabilities.size() ? ")" : "");
    }
    std::cout << ", " << p.latency_us << " us in the service\n";
  } catch (const mlp::ServiceError& error) {  // the service said no: code, message, field
    std::cerr << error.code() << ": " << error.message() << "\n";
    return 2;
  } catch (const mlp::TimeoutError& error) {  // no answer (or a CURVE handshake refused)
    std::cerr << error.what() << "\n";
    return 3;
  }
  return 0;
}
