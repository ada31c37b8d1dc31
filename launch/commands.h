// The moefold subcommands. Each takes the arguments after its name and returns the exit code;
// errors reach the user as one line on stderr (from rank 0 only under mpirun).
#pragma once

namespace moefold {

int run_layout_command(int argc, char** argv);
int run_train_command(int argc, char** argv);
int run_eval_command(int argc, char** argv);
int run_preprocess_command(int argc, char** argv);
int run_plan_command(int argc, char** argv);  // launch/plan_command.cpp
int run_import_hf_command(int argc, char** argv);  // under mpirun, any layout
int run_export_hf_command(int argc, char** argv);  // one process

}  // namespace moefold
