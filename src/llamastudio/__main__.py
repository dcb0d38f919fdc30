from llamastudio.cli.main import main

main()
