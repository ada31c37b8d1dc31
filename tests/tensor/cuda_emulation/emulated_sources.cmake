# Rewrites a tensor/cuda source for the host compiler (cmake -DIN=… -DOUT=… -P this): each
# `kernel<<<grid, block, shared, stream>>>(args)` becomes
# `::moefold::cuda_emulation::Launch(kernel, grid, block, shared, stream)(args)`
# (emulated_launch.h). A #line directive keeps file names and lines those of the source.
file(READ "${IN}" text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z_0-9]*(<[A-Za-z_0-9:, ]*>)?)<<<"
       "::moefold::cuda_emulation::Launch(\\1, " text "${text}")
string(REPLACE ">>>(" ")(" text "${text}")
file(WRITE "${OUT}" "#line 1 \"${IN}\"\n${text}")
