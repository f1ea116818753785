/* commands — the rlm subcommands other than ask, each in its own file under
 * cli/. Each takes argv starting at the subcommand's name and returns the
 * process exit code documented in `rlm --help`. */
#ifndef RLM_CLI_COMMANDS_H
#define RLM_CLI_COMMANDS_H

int cmd_doctor(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);

#endif
