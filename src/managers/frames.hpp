// FrameReader: reads the manager protocol's frames (a u64 length, then that many bytes, as
// Connection::send_bytes writes them) from a socket that it alone reads, with one recv() for a
// small frame where Connection::recv_bytes makes two (the length, then the bytes: it must not
// read past a frame, since others may poll or read the descriptor after it). A recv costs about
// 0.5 us here, a tenth of a proxy call. Bytes read past a frame (a client that sends requests
// without waiting) stay for the next one. Internal to src/managers/.
#pragma once

#include <sys/socket.h>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>

#include <multiproc/connection.hpp>

namespace multiproc::detail {

class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd) {}

  // The next frame's bytes. EOFError when the peer closes between frames; a ProcessError when
  // the stream breaks or a frame announces more than max_bytes. Memory follows the bytes that
  // arrive, not the length a frame announces.
  std::string next(uint64_t max_bytes) {
    if (!fill(sizeof(uint64_t), true)) throw EOFError("the connection's peer has closed it");
    uint64_t len = 0;
    std::memcpy(&len, buf_.data() + start_, sizeof len);
    if (len > max_bytes)
      throw ProcessError("malformed message: a frame of " + std::to_string(len) +
                         " bytes is over the limit of " + std::to_string(max_bytes));
    start_ += sizeof len;
    if (!fill(len, false)) throw ProcessError("malformed message: the connection ended in a frame");
    std::string out = buf_.substr(start_, len);
    start_ += len;
    return out;
  }

  // Bytes read past the last frame handed out.
  bool has_more() const { return start_ < buf_.size(); }

 private:
  static constexpr size_t kRead = 4096;  // what one recv asks for: a whole request, usually

  // Makes n bytes available from start_; false at EOF before any of them when eof_ok.
  bool fill(uint64_t n, bool eof_ok) {
    if (start_ > 0 && start_ == buf_.size()) {
      buf_.clear();
      start_ = 0;
    }
    while (buf_.size() - start_ < n) {
      if (start_ > 0) {  // keep only what is still to be read
        buf_.erase(0, start_);
        start_ = 0;
      }
      const size_t have = buf_.size();
      // Grows by what arrives (at most doubling), never to an announced length at once.
      const size_t want = std::max<size_t>(kRead, std::min<uint64_t>(n - have, have));
      buf_.resize(have + want);
      ssize_t r;
      do r = ::recv(fd_, buf_.data() + have, want, 0);
      while (r < 0 && errno == EINTR);
      if (r < 0 && errno == ECONNRESET) r = 0;
      if (r < 0) {
        buf_.resize(have);
        throw ProcessError("recv on a connection failed: " +
                           std::generic_category().message(errno));
      }
      buf_.resize(have + static_cast<size_t>(r));
      if (r == 0) {
        if (eof_ok && have == 0) return false;
        throw ProcessError("malformed message: the connection ended inside a frame");
      }
    }
    return true;
  }

  int fd_;
  std::string buf_;
  size_t start_ = 0;  // buf_[0, start_) has been handed out
};

}  // namespace multiproc::detail
