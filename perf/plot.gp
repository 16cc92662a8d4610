# perf/compare.sh's plot: bus bandwidth against message size, log axes, one line per library
# and the machine's limit (docs/performance.md).
# Usage: gnuplot -c perf/plot.gp DATA.csv OUT.png "TITLE"
#   DATA.csv columns: size,anyccl_busbw,mpi_busbw,limit_busbw (header line first).
set datafile separator ","
set terminal pngcairo size 900,600 noenhanced font ",10"
set output ARG2
set title ARG3
set logscale x 2
set logscale y 10
set format x "%.0b%B"
set format y "%g"
set xlabel "message size (bytes, nccl-tests size column)"
set ylabel "bus bandwidth (GB/s)"
set key bottom right
set grid
plot ARG1 using 1:2 skip 1 with linespoints lw 2 pt 7 title "AnyCCL", \
     ARG1 using 1:3 skip 1 with linespoints lw 2 pt 5 title "Open MPI", \
     ARG1 using 1:4 skip 1 with lines dt 2 lw 2 lc rgb "gray40" title "limit (model)"
