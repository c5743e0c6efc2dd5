from sgilo.cli import main

main()
