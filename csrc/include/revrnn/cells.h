// Every cell the compiled executors run, as X(name, Cell): the name is the one its family's glue
// passes (revrnn/cells/<family>/cpu.py), Cell the struct of per-element math in its header.
// Adding a cell to the executors is one header and one entry here; the reversible cells, whose
// loop is revrnn/reversible.h, have their own list, and the NRU its own loop (revrnn/nru.h).
#pragma once

#include "revrnn/elman.h"
#include "revrnn/glstm.h"
#include "revrnn/gru.h"
#include "revrnn/libru.h"
#include "revrnn/ligru.h"
#include "revrnn/lstm.h"
#include "revrnn/reset_before.h"
#include "revrnn/reversible.h"

#define REVRNN_CELLS(X) \
  X(lstm, LSTM)         \
  X(lstm_proj, LSTMProj) \
  X(kaf_lstm, KAFLSTM)  \
  X(kaf_gru, KAFGRU)    \
  X(gru, GRUv<0>)       \
  X(gru1, GRUv<1>)      \
  X(gru2, GRUv<2>)      \
  X(ligru, LiGRU)       \
  X(libru, LiBRUv<0>)   \
  X(libru_logprobs, LiBRUv<1>) \
  X(gru_reset_before, ResetBeforeGRUv<0>) \
  X(gru1_reset_before, ResetBeforeGRUv<1>) \
  X(gru2_reset_before, ResetBeforeGRUv<2>) \
  X(mgu, MGUv<0>)       \
  X(mgu1, MGUv<1>)      \
  X(mgu2, MGUv<2>)      \
  X(glstm, GLSTM)       \
  X(elman_tanh, Elman<false>) \
  X(elman_relu, Elman<true>)

#define REVRNN_REVERSIBLE_CELLS(X) \
  X(revgru, RevGRU)                 \
  X(revlstm, RevLSTM)
