/* bench — `rlm bench`: placeholder being written (issue 7). */
#include <stdio.h>

#include "commands.h"

int cmd_bench(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("rlm bench: not implemented yet\n", stderr);
    return 4;
}
