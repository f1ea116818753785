/* demo — `rlm demo`: placeholder being written (issue 7). */
#include <stdio.h>

#include "commands.h"

int cmd_demo(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("rlm demo: not implemented yet\n", stderr);
    return 4;
}
