// Every cell the compiled executors run, as X(name, Cell): the name is the one its family's glue
// passes (revrnn/cells/<family>/cpu.py), Cell the struct of per-element math in its header.
// Adding a cell to the executors is one header and one entry here.
#pragma once

#include "revrnn/glstm.h"
#include "revrnn/gru.h"
#include "revrnn/ligru.h"
#include "revrnn/lstm.h"
#include "revrnn/reset_before.h"

#define REVRNN_CELLS(X) \
  X(lstm, LSTM)         \
  X(gru, GRU)           \
  X(ligru, LiGRU)       \
  X(gru_reset_before, ResetBeforeGRU) \
  X(mgu, MGU)           \
  X(glstm, GLSTM)
