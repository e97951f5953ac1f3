/* The basalt command: the commands and their dispatch are in src/cli/commands.c. */
#include "cli/cli.h"

int main(int argc, char **argv)
{
    return bs_cli_run(argc, argv);
}
