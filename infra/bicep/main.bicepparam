// Example parameters. Copy, fill in the ids, and keep the MongoDB URI out of the file:
//   export MONGODB_URI='mongodb+srv://user:password@cluster0.example.mongodb.net/'
//   az deployment group create -g <rg> -f infra/bicep/main.bicep -p infra/bicep/main.bicepparam
using 'main.bicep'

param baseName = 'mfm'

// Fabric workspace id and mirrored database id (both GUIDs) from the mirrored database's URL or
// its "Landing zone" details in Fabric.
param landingZoneUrl = 'https://onelake.dfs.fabric.microsoft.com/00000000-0000-0000-0000-000000000000/00000000-0000-0000-0000-000000000000/Files/LandingZone'

// Read from the environment when the deployment command runs; never committed.
param mongodbUri = readEnvironmentVariable('MONGODB_URI')

param mongodbDatabase = 'shop'
param mongodbCollections = 'all'
param logLevel = 'INFO'

param pythonVersion = '3.13'
param instanceMemoryMB = 2048
param maximumInstanceCount = 40

param enableKeyVaultPurgeProtection = false

// Networking (optional). To reach Atlas over Private Link, set enableVnet = true and paste the
// private link service resource id (or alias) Atlas shows when you add an Azure private endpoint.
param enableVnet = false
param atlasPrivateLinkServiceId = ''
