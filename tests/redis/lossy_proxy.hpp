// A TCP proxy in front of the test's redis-server that can lose one reply: the server has run the
// command, its answer never reaches the client (what a server killed or restarted between the
// two does). Clients given proxy.url() go through it; after drop_next_reply_to({"RENAME"}), the
// first reply on a connection whose last command names RENAME, and that is not a nil reply (a
// blocking pop that timed out), is swallowed and that connection closed. Later connections relay
// normally. One thread per connection; everything stops with the proxy.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "redis_server.hpp"

class LossyProxy {
 public:
  explicit LossyProxy(int upstream_port) : upstream_(upstream_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(listen_fd_, 64);
    socklen_t len = sizeof a;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~LossyProxy() {
    stop_ = true;
    acceptor_.join();
    close(listen_fd_);
    std::vector<std::thread> relays;
    {
      std::lock_guard lk(mu_);  // not held while joining: relays take it too
      relays.swap(relays_);
    }
    for (auto& t : relays) t.join();
  }
  LossyProxy(const LossyProxy&) = delete;
  LossyProxy& operator=(const LossyProxy&) = delete;

  std::string url() const {
    return "redis://:" + std::string(RedisServer::kPassword) +
           "@127.0.0.1:" + std::to_string(port_) + "/0";
  }
  void drop_next_reply_to(std::vector<std::string> commands) {
    std::lock_guard lk(mu_);
    commands_ = std::move(commands);
    armed_ = true;
  }
  bool dropped() const { return drops_.load() > 0; }
  int drops() const { return drops_.load(); }  // replies lost so far

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      std::lock_guard lk(mu_);
      relays_.emplace_back([this, fd] { relay(fd); });
    }
  }

  // Whether a command, as the client wrote it, names one of the armed commands.
  bool targeted(const std::string& request) {
    std::lock_guard lk(mu_);
    if (!armed_) return false;
    for (const auto& c : commands_)
      if (request.find(c) != std::string::npos) return true;
    return false;
  }
  bool take_the_drop() {
    std::lock_guard lk(mu_);
    if (!armed_) return false;
    armed_ = false;
    ++drops_;
    return true;
  }

  void relay(int client) {
    const int server = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(upstream_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(server);
      close(client);
      return;
    }
    std::string last_request;  // judged when its reply comes: the rule may be armed meanwhile
    char buf[65536];
    while (!stop_) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (poll(p, 2, 50) <= 0) continue;
      if (p[0].revents) {
        const ssize_t n = read(client, buf, sizeof buf);
        if (n <= 0 || write(server, buf, static_cast<size_t>(n)) != n) break;
        last_request.assign(buf, static_cast<size_t>(n));
      }
      if (p[1].revents) {
        const ssize_t n = read(server, buf, sizeof buf);
        if (n <= 0) break;
        const std::string reply(buf, static_cast<size_t>(n));
        const bool nil = reply.rfind("*-1", 0) == 0 || reply.rfind("$-1", 0) == 0;
        if (!nil && targeted(last_request) && take_the_drop())
          break;  // the server ran it; no answer
        if (write(client, buf, static_cast<size_t>(n)) != n) break;
      }
    }
    close(server);
    close(client);
  }

  int upstream_, listen_fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> drops_{0};
  std::mutex mu_;
  bool armed_ = false;
  std::vector<std::string> commands_;
  std::vector<std::thread> relays_;
  std::thread acceptor_;
};
