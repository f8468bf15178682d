// fd_channel.hpp: a message channel over a byte stream (a pipe or a socketpair), the baseline any
// IPC queue is measured against; a channel for queue_driver.hpp.
//
// Every message is a frame, an 8-byte length then the payload, written with one write()/writev()
// call. The reader is buffered (reads of up to kBufBytes) when it is the only reader of the
// stream. With several readers (the many-to-many case) a buffered reader could swallow frames
// meant for another, so each get() reads exactly one 16-byte frame: integer frames are written
// whole (16 <= PIPE_BUF, one skb on a unix socket), so a 16-byte read returns exactly one.
// The channel does not own its descriptors; OwnedFds closes them.
#pragma once

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

// Two descriptors closed on destruction (a pipe's ends, or a socketpair's).
struct OwnedFds {
  int fd[2] = {-1, -1};
  OwnedFds() = default;
  OwnedFds(const OwnedFds&) = delete;
  OwnedFds& operator=(const OwnedFds&) = delete;
  ~OwnedFds() {
    for (int f : fd) {
      if (f >= 0) close(f);
    }
  }
};

class FdChannel {
 public:
  static constexpr std::size_t kBufBytes = 256 * 1024;

  // Writes go to write_fd, reads come from read_fd. shared_reader: more than one process reads.
  FdChannel(int read_fd, int write_fd, bool shared_reader = false)
      : rfd_(read_fd), wfd_(write_fd), shared_reader_(shared_reader), buf_(kBufBytes) {}

  void put(std::uint64_t v) {
    const std::uint64_t frame[2] = {8, v};
    write_all(frame, sizeof frame);
  }
  std::uint64_t get() {
    std::uint64_t frame[2];
    if (shared_reader_) {
      read_exact(reinterpret_cast<std::byte*>(frame), sizeof frame);
    } else {
      fill(sizeof frame);
      std::memcpy(frame, buf_.data() + pos_, sizeof frame);
      pos_ += sizeof frame;
    }
    if (frame[0] != 8) throw std::runtime_error("frame of " + std::to_string(frame[0]) + " bytes");
    return frame[1];
  }
  // One write of up to 64 frames.
  void put_many(std::span<const std::uint64_t> items) {
    std::uint64_t frames[2 * 64];
    std::size_t n = 0;
    for (std::uint64_t v : items) {
      frames[n++] = 8;
      frames[n++] = v;
      if (n == std::size(frames)) {
        write_all(frames, n * 8);
        n = 0;
      }
    }
    if (n) write_all(frames, n * 8);
  }
  // Every whole frame already buffered (at least one), up to out.size().
  std::size_t get_many(std::span<std::uint64_t> out) {
    fill(16);
    std::size_t k = 0;
    while (k < out.size() && len_ - pos_ >= 16) {
      std::uint64_t frame[2];
      std::memcpy(frame, buf_.data() + pos_, 16);
      if (frame[0] != 8)
        throw std::runtime_error("frame of " + std::to_string(frame[0]) + " bytes");
      out[k++] = frame[1];
      pos_ += 16;
    }
    return k;
  }
  void put_bytes(std::span<const std::byte> item) {
    std::uint64_t len = item.size();
    iovec iov[2] = {{&len, 8}, {const_cast<std::byte*>(item.data()), item.size()}};
    std::size_t left = 8 + item.size();
    int first = 0;
    while (left > 0) {
      const ssize_t w = writev(wfd_, iov + first, 2 - first);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("writev: ") + std::strerror(errno));
      }
      left -= static_cast<std::size_t>(w);
      for (auto done = static_cast<std::size_t>(w); done > 0;) {  // skip what was written
        const std::size_t step = std::min(done, iov[first].iov_len);
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + step;
        iov[first].iov_len -= step;
        done -= step;
        if (iov[first].iov_len == 0 && first < 1) ++first;
      }
    }
  }
  // Small items are handed over in place in the read buffer; large ones are read straight into a
  // private buffer. Either way the payload is copied out of the kernel once.
  template <class F>
  void get_bytes(F&& visit) {
    std::uint64_t len;
    fill(8);
    std::memcpy(&len, buf_.data() + pos_, 8);
    pos_ += 8;
    if (len + 8 <= buf_.size()) {
      fill(len);
      visit(std::span<const std::byte>(buf_.data() + pos_, len));
      pos_ += len;
      return;
    }
    big_.resize(len);
    const std::size_t have = std::min<std::size_t>(len, len_ - pos_);
    std::memcpy(big_.data(), buf_.data() + pos_, have);
    pos_ += have;
    read_exact(big_.data() + have, len - have);
    visit(std::span<const std::byte>(big_));
  }

 private:
  void write_all(const void* p, std::size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = write(wfd_, c, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("write: ") + std::strerror(errno));
      }
      c += w;
      n -= static_cast<std::size_t>(w);
    }
  }
  void read_exact(std::byte* p, std::size_t n) {
    while (n > 0) {
      const ssize_t r = read(rfd_, p, n);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("read: ") + std::strerror(errno));
      }
      if (r == 0) throw std::runtime_error("peer closed the stream");
      p += r;
      n -= static_cast<std::size_t>(r);
    }
  }
  // Makes at least n bytes (n <= kBufBytes) available at pos_.
  void fill(std::size_t n) {
    if (len_ - pos_ >= n) return;
    if (pos_ > 0) {
      std::memmove(buf_.data(), buf_.data() + pos_, len_ - pos_);
      len_ -= pos_;
      pos_ = 0;
    }
    while (len_ < n) {
      const ssize_t r = read(rfd_, buf_.data() + len_, buf_.size() - len_);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("read: ") + std::strerror(errno));
      }
      if (r == 0) throw std::runtime_error("peer closed the stream");
      len_ += static_cast<std::size_t>(r);
    }
  }

  int rfd_, wfd_;
  bool shared_reader_;
  std::vector<std::byte> buf_;
  std::size_t pos_ = 0, len_ = 0;
  std::vector<std::byte> big_;
};

}  // namespace bench
