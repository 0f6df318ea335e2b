# cmake -DIN=src.cu -DOUT=out.cpp -P emu/transform.cmake
# Makes a CUDA source compilable by the host compiler against emu/cuda_emu.h (force-included):
#   kernel<<<grid, block, smem, stream>>>(args)  ->  ::emu::Launcher(kernel, "kernel", grid, block, smem, stream)(args)
#   extern __shared__ [__align__(N)] T name[];    ->  T* name = static_cast<T*>(::emu::dynamic_smem());
# A `#line 1 "src.cu"` keeps compiler messages (and the emulator's barrier sites) pointing at the real file.
# The product sources keep plain CUDA syntax for nvcc; only these build-tree copies are rewritten.
file(READ "${IN}" text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_:]*(<[^<>;()]*>)?)[ \t]*<<<([^;<>]*)>>>"
       "::emu::Launcher(\\1, \"\\1\", \\3)" text "${text}")
string(REGEX REPLACE "extern[ \t]+__shared__[ \t]+(__align__\\([0-9]+\\)[ \t]+)?([A-Za-z_][A-Za-z0-9_ ]*[A-Za-z0-9_])[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*\\[[ \t]*\\][ \t]*;"
       "\\2* \\3 = static_cast<\\2*>(::emu::dynamic_smem());" text "${text}")
if(text MATCHES "<<<|extern[ \t]+__shared__")
  message(FATAL_ERROR "emu/transform.cmake: ${IN} still has a kernel launch or extern __shared__ it could not rewrite")
endif()
set(text "#line 1 \"${IN}\"\n${text}")
# Only touch the output when it changes, so that an unrelated edit does not recompile.
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL text)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${text}")
