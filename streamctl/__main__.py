from streamctl.cli.main import main

main()
