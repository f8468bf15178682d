// Naming code across processes. A spawned or forkserver child runs the same program, but at other
// addresses (ASLR), so a function travels as (module, offset from the module's load address):
// the module is "" for the main executable or the path of a shared object. No registration is
// needed for the program's own functions.
#pragma once

#include <cstdint>
#include <string>

namespace multiproc::detail {

struct CodeAddress {
  std::string module;   // "" = the main executable
  uint64_t offset = 0;  // from the module's load bias

  template <class Archive>
  void serialize(Archive& ar) {
    ar(module, offset);
  }
};

// Throws ProcessError if `address` is not inside a loaded module.
CodeAddress encode_code_address(const void* address);
// Throws ProcessError if the module is not loaded in this process.
const void* decode_code_address(const CodeAddress& code);

}  // namespace multiproc::detail
